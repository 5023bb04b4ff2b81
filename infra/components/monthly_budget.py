"""MonthlyBudget: an AWS Budgets cost budget on the stack's tag, alerting at 80 % and 100 % of actual and forecast
spend.

Created only when `deepcloud:monthlyBudget` is above 0. The budget counts the costs of resources tagged
`deepcloud:stack=<project>/<stack>` (a `TagKeyValue` cost filter, `user:<key>$<value>`, as the provider documents), so
two stacks in one account have two budgets. AWS Budgets sees a user-defined tag only once it is activated as a cost
allocation tag in the Billing console, which is possible a day or so after the tag was first used; until then the
budget reads $0 (README, "The AWS workflow"). Alerts go by email and/or to an SNS topic. `make train` reads the budget
(DescribeBudget) and refuses a run whose worst case exceeds what is left of it (ops/aws/budget.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.components._base import Component

THRESHOLDS = (80, 100)
"""Percent of the limit at which each alert fires, for actual and for forecast spend."""
NOTIFICATION_TYPES = ("ACTUAL", "FORECASTED")


@dataclass
class MonthlyBudgetArgs:
    name: str
    """The budget's name (unique in the account; no ':' or '\\')."""

    limit_usd: int
    """The monthly limit in USD."""

    tag_key: str
    tag_value: str
    """The cost allocation tag whose resources the budget counts."""

    emails: Sequence[str]
    sns_topic_arn: str | None


class MonthlyBudget(Component[MonthlyBudgetArgs]):
    budget_name: pulumi.Output[str]

    def __init__(self, name: str, args: MonthlyBudgetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, args, opts)
        budget = self._create_budget()
        self.budget_name = budget.name
        self.register_outputs({"budget_name": self.budget_name})

    def _create_budget(self) -> aws.budgets.Budget:
        args = self._args
        notifications: list[aws.budgets.BudgetNotificationArgsDict] = []
        for kind in NOTIFICATION_TYPES:
            for percent in THRESHOLDS:
                notification: aws.budgets.BudgetNotificationArgsDict = {
                    "comparison_operator": "GREATER_THAN",
                    "threshold": float(percent),
                    "threshold_type": "PERCENTAGE",
                    "notification_type": kind,
                }
                if args.emails:
                    notification["subscriber_email_addresses"] = list(args.emails)
                if args.sns_topic_arn:
                    notification["subscriber_sns_topic_arns"] = [args.sns_topic_arn]
                notifications.append(notification)
        return aws.budgets.Budget(
            f"{self._name}-budget",
            name=args.name,
            budget_type="COST",
            time_unit="MONTHLY",
            limit_amount=f"{args.limit_usd:.2f}",
            limit_unit="USD",
            cost_filters=[{"name": "TagKeyValue", "values": [f"user:{args.tag_key}${args.tag_value}"]}],
            notifications=notifications,
            opts=self._child(),
        )
