"""The budget guard of `make train TARGET=aws` (ops/aws/budget.py) against moto_server's AWS Budgets and STS.

moto stores the budget as CreateBudget sends it, CalculatedSpend included, and answers DescribeBudget with it: the
spend AWS Budgets would have calculated this month (botocore budgets `Budget.CalculatedSpend`; docs/aws-behaviours.md
C1). The stack exports `budget_name` as infra/ does when `deepcloud:monthlyBudget` is set.
"""

from __future__ import annotations

import pytest

from ops.aws import budget
from ops.aws.training import run as train
from ops.aws.training.base import TrainOptions
from ops.errors import OpsError
from tests.ops.conftest import client


def make_budget(stack, limit: str, spent: str, forecast: str = "0") -> str:
    name = f"deepcloud-{stack.name}-monthly"
    client("budgets").create_budget(
        AccountId="123456789012",
        Budget={
            "BudgetName": name,
            "BudgetType": "COST",
            "TimeUnit": "MONTHLY",
            "BudgetLimit": {"Amount": limit, "Unit": "USD"},
            "CostFilters": {"TagKeyValue": [f"user:deepcloud:stack${stack.tag}"]},
            "CalculatedSpend": {
                "ActualSpend": {"Amount": spent, "Unit": "USD"},
                "ForecastedSpend": {"Amount": forecast, "Unit": "USD"},
            },
        },
    )
    stack.standins.update(outputs={**stack.outputs, "budget_name": name, "monthly_budget": int(float(limit))})
    return name


def test_a_run_over_what_is_left_of_the_budget_is_refused_before_anything_starts(stack, tmp_path, capsys) -> None:
    """24 h of a g5.xlarge at most ($24.14) against $30 - $12.50 spent: refused, saying by how much."""
    name = make_budget(stack, "30", "12.5", "28")
    stack.put_dataset()
    ctx = stack.context(tmp_path)
    with pytest.raises(OpsError) as error:
        train.run(ctx, TrainOptions(hyperparameters={}))
    assert str(error.value) == (
        f"the run's worst case $24.14 exceeds what is left of budget {name} by $6.64 ($17.50 "
        "of $30.00 left this month): set MAX_COST=17.50 or less, or raise "
        "deepcloud:monthlyBudget"
    )
    out = capsys.readouterr().out
    assert f"budget       {name}: $12.50 of $30.00 spent this month, forecast $28.00; $17.50 left" in out
    assert not stack.standins.calls("docker"), "no image was built"
    assert not [c for c in stack.standins.calls("pulumi") if c[:1] == ["up"] or c[:2] == ["config", "set"]], (
        "nothing was changed"
    )
    assert not client("ecs").list_tasks(cluster=stack.cluster_name)["taskArns"], "no task was started"


def test_a_run_within_the_budget_goes_ahead_and_max_cost_fits_it(stack, tmp_path, capsys) -> None:
    make_budget(stack, "30", "12.5")
    ctx = stack.context(tmp_path)
    standing = budget.check(ctx, 17.5)
    assert (standing.limit, standing.spent, standing.left) == (30.0, 12.5, 17.5)
    with pytest.raises(OpsError, match=r"exceeds what is left of budget .* by \$0.010"):
        budget.check(ctx, 17.51)


def test_no_budget_no_check(stack, tmp_path) -> None:
    assert budget.check(stack.context(tmp_path), 1000.0) is None
