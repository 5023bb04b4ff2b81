"""Cost: budgets that tell someone before the money is spent."""

from __future__ import annotations

from collections.abc import Iterator

from infra.policy._core import as_list, get, resource_rule

BUDGET = "aws:budgets/budget:Budget"


@resource_rule(
    "budget-alerts",
    "Cost budgets alert someone on both actual and forecast spend",
    [BUDGET],
    ["AWS Well-Architected COST02-BP05 (implement cost controls)", "AWS Budgets best practices"],
)
def budget_alerts(resource) -> Iterator[str]:
    notified = {
        get(n, "notificationType")
        for n in as_list(get(resource.props, "notifications"))
        if as_list(get(n, "subscriberEmailAddresses")) or as_list(get(n, "subscriberSnsTopicArns"))
    }
    for kind in ("ACTUAL", "FORECASTED"):
        if kind not in notified:
            yield f"needs a {kind} notification with a subscriber (an email address or an SNS topic)"
