"""`make cost` (python -m infra.cli cost): the stack's idle and running cost from what the program declares, offline.

The program runs under the same mocks as the other infra tests (infra/synth.py); infra/cost.py prices what it
registered with ops/aws/prices.toml. Figures are checked against the table's own prices, so a refreshed table keeps
these tests true; the README's figures are checked against what the command prints now.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from infra.cli import cost_lines
from infra.components.network import INTERFACE_ENDPOINTS
from infra.cost import HOURS_PER_MONTH, STORED_GB, price
from infra.prices import PriceTable
from tests.infra.conftest import MODEL_KEY
from tests.infra.harness import REPO, Synthesis

PRICES = PriceTable.load()
ALARM_H = PRICES.rate("cloudwatch_alarm").usd / HOURS_PER_MONTH


def bill_of(stack: Synthesis):
    return price(stack.resources, PRICES, stack.outputs)


def test_default_stack_idles_on_its_interface_endpoints(default_stack: Synthesis) -> None:
    bill = bill_of(default_stack)
    endpoints = len(INTERFACE_ENDPOINTS) * 2 * PRICES.rate("vpc_interface_endpoint").usd
    assert bill.idle_by(["network"]) == pytest.approx(endpoints)
    assert bill.idle_by(["compute"]) == 0, "the GPU group is at 0 and no model is configured"
    other = (
        PRICES.rate("kms_key").usd
        + 2 * PRICES.rate("cloudwatch_alarm").usd
        + STORED_GB["s3"] * PRICES.rate("s3_standard").usd
        + STORED_GB["ecr"] * PRICES.rate("ecr_storage").usd
        + STORED_GB["logs"] * PRICES.rate("logs_storage").usd
    ) / HOURS_PER_MONTH
    assert bill.idle_usd_h == pytest.approx(endpoints + other)
    gpu = max(PRICES.get("ec2", t).usd_per_hour for t in ("g5.xlarge", "g6.xlarge", "g4dn.xlarge", "g5.2xlarge"))
    assert bill.running_usd_h == pytest.approx(endpoints + other + 2 * gpu), "two GPU instances at most"
    assert {line.component for line in bill.lines} == {
        "ArtifactStore",
        "GpuCapacity",
        "ImageRepos",
        "Network",
        "TrainingTask",
    }
    for line in bill.lines:
        assert line.section in ("", *PRICES.sources), f"{line.item} names no priced section"


def test_a_realtime_model_idles_on_two_instances(model_stack: Synthesis) -> None:
    bill = bill_of(model_stack)
    (endpoint,) = [line for line in bill.lines if line.component == "InferenceEndpoint" and "ml.m5.large" in line.item]
    hourly = PRICES.get("sagemaker_hosting", "ml.m5.large").usd_per_hour
    assert (endpoint.idle_usd_h, endpoint.running_usd_h) == (pytest.approx(2 * hourly), pytest.approx(4 * hourly))
    alarms = [line for line in bill.lines if line.component == "InferenceEndpoint" and "alarm" in line.item]
    assert sum(line.idle_usd_h for line in alarms) == pytest.approx(4 * ALARM_H), "2 rollback + 2 target tracking"


def test_serverless_on_the_on_demand_network_costs_almost_nothing_idle(serverless_stack: Synthesis) -> None:
    """The lean stack's promise: idle compute and network $0/h, idle total at most $3 a month."""
    bill = bill_of(serverless_stack)
    assert bill.idle_by(["compute"]) == 0
    assert bill.idle_by(["network"]) == 0
    assert bill.idle_usd_h * HOURS_PER_MONTH <= 3.0
    (serverless,) = [line for line in bill.lines if line.section == "sagemaker_serverless"]
    assert serverless.running_usd_h == pytest.approx(PRICES.serverless_per_second(3072) * 3600 * 8)
    (on_demand,) = [line for line in bill.lines if "only while a run needs them" in line.item]
    assert on_demand.running_usd_h == pytest.approx(
        len(INTERFACE_ENDPOINTS) * 2 * PRICES.rate("vpc_interface_endpoint").usd
    ), "the endpoints bill while a training run has them up"


def test_async_scaled_to_zero_has_no_idle_compute(async_stack: Synthesis) -> None:
    bill = bill_of(async_stack)
    assert bill.idle_by(["compute"]) == 0
    (endpoint,) = [line for line in bill.lines if "async" in line.item and line.section == "sagemaker_hosting"]
    assert endpoint.running_usd_h == pytest.approx(3 * PRICES.get("sagemaker_hosting", "ml.m5.large").usd_per_hour)
    assert any("AWS Budgets bills action-enabled budgets only" in note for note in bill.notes)


def test_the_report_names_every_price_source_and_date() -> None:
    lines = cost_lines("dev", [f"modelArtifact={MODEL_KEY}", "endpointMode=serverless"])
    assert lines[0].startswith("==> cost: stack dev (")
    sources = [line for line in lines if re.match(r"^\s+\[\w+\] ", line)]
    assert {re.match(r"^\s+\[(\w+)\]", line).group(1) for line in sources} >= {"rates", "ec2", "sagemaker_serverless"}
    for line in sources:
        assert re.search(r", \d{4}-\d{2}-\d{2}$", line), line


def test_cost_needs_no_pulumi_cli_and_bad_input_is_one_line(tmp_path) -> None:
    env = {**os.environ, "PATH": str(tmp_path), "STACK": "nosuchstack"}
    run = [sys.executable, "-m", "infra.cli", "cost"]
    done = subprocess.run(run, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "no Pulumi.nosuchstack.yaml: the defaults" in done.stdout
    bad = subprocess.run(
        [*run, "--set", "endpointMode=batch"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        "error: deepcloud:endpointMode must be one of realtime, serverless, async, multi-model"
    ]
    bad = subprocess.run(
        [*run, "--set", "endpointMode"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert bad.stderr.strip().splitlines() == [
        "error: --set 'endpointMode' is not key=value: write e.g. --set endpointMode=serverless"
    ]


def test_the_stack_config_file_is_read_as_pulumi_would_hand_it_over(tmp_path) -> None:
    from infra.cli import stack_values

    (tmp_path / "Pulumi.team.yaml").write_text(
        "config:\n  aws:region: eu-west-1\n  deepcloud:monthlyBudget: 30\n  deepcloud:budgetEmails: [a@b.co]\n"
        "  deepcloud:forceDestroy: true\n"
    )
    values, region, where = stack_values("team", ["endpointMode=async"], repo=tmp_path)
    assert values == {
        "monthlyBudget": "30",
        "budgetEmails": '["a@b.co"]',
        "forceDestroy": "true",
        "endpointMode": "async",
    }
    assert (region, where) == ("eu-west-1", "Pulumi.team.yaml + endpointMode=async")


README_RUNS = {
    "default": [],
    "realtime": [f"modelArtifact={MODEL_KEY}"],
    "cheapest": [f"modelArtifact={MODEL_KEY}", "endpointMode=serverless", "networkProfile=on-demand"],
}


@pytest.mark.parametrize("run", sorted(README_RUNS))
def test_the_readmes_cost_figures_are_what_make_cost_prints(run: str) -> None:
    """README, "What it costs": each quoted idle/running line is the command's output for that config now."""
    text = (REPO / "README.md").read_text()
    summary = [line for line in cost_lines("dev", README_RUNS[run]) if line.startswith(("idle ", "running "))]
    for line in summary:
        assert line in text, f"README's {run} figures are stale: expected\n{line}"


def test_preview_and_up_print_the_cost_first(tmp_path) -> None:
    """The first lines of `python -m infra.cli preview`: the summary, then pulumi's own output (a stand-in here)."""
    fake = tmp_path / "pulumi"
    fake.write_text('#!/bin/sh\necho "pulumi $*"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "infra.cli", "preview", "--stack", "dev"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("==> cost: stack dev (")
    assert lines[1].startswith("idle      $")
    assert lines[2].startswith("running   at most $")
    assert lines[3] == f"pulumi preview --policy-pack {REPO / 'infra' / 'policy'} --stack dev"
