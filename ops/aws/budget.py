"""The budget guard: `make train` refuses a run whose worst case exceeds what is left of the stack's monthly budget.

infra/ creates an AWS Budgets cost budget on the stack's tag when `deepcloud:monthlyBudget` is set and exports its name
(`budget_name`). DescribeBudget answers its limit and `CalculatedSpend.ActualSpend` this month (botocore budgets
`Budget`, `CalculatedSpend`; docs/aws-behaviours.md C1-C2: spend counts only once the tag is an activated cost
allocation tag, and AWS refreshes it a few times a day, so it lags the bill by hours).
"""

from __future__ import annotations

from dataclasses import dataclass

from ops.aws.console import say
from ops.aws.context import Context
from ops.aws.prices import usd
from ops.errors import OpsError


@dataclass(frozen=True, slots=True)
class Standing:
    name: str
    limit: float
    spent: float
    forecast: float | None

    @property
    def left(self) -> float:
        return max(self.limit - self.spent, 0.0)


def standing(ctx: Context) -> Standing | None:
    """The stack's budget this month, or None when it has none."""
    name = ctx.outputs.budget_name
    if not name:
        return None
    account = ctx.aws.client("sts").get_caller_identity()["Account"]
    budget = ctx.aws.client("budgets").describe_budget(AccountId=account, BudgetName=name)["Budget"]
    spend = budget.get("CalculatedSpend", {})
    forecast = spend.get("ForecastedSpend", {}).get("Amount")
    return Standing(
        name=name,
        limit=float(budget["BudgetLimit"]["Amount"]),
        spent=float(spend.get("ActualSpend", {}).get("Amount", 0)),
        forecast=None if forecast is None else float(forecast),
    )


def check(ctx: Context, worst_case: float) -> Standing | None:
    """Say where the budget stands; refuse (OpsError) when `worst_case` dollars would go past what is left."""
    found = standing(ctx)
    if found is None:
        return None
    forecast = f", forecast {usd(found.forecast)}" if found.forecast is not None else ""
    say(
        f"budget       {found.name}: {usd(found.spent)} of {usd(found.limit)} spent this month{forecast}; "
        f"{usd(found.left)} left (AWS Budgets, refreshed a few times a day)"
    )
    if worst_case > found.left:
        raise OpsError(
            f"the run's worst case {usd(worst_case)} exceeds what is left of budget {found.name} by "
            f"{usd(worst_case - found.left)} ({usd(found.left)} of {usd(found.limit)} left this month): "
            f"set MAX_COST={found.left:.2f} or less, or raise deepcloud:monthlyBudget"
        )
    return found
