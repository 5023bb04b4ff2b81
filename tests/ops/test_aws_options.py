"""The aws target's typed records: AwsOptions (the settings, read and checked once), RunRecord (run.json), and the one
`pulumi` command line ops and `python -m infra.cli` share."""

from __future__ import annotations

import argparse
import dataclasses
import sys

import pytest

from infra import cli as infra_cli
from infra.engine import POLICY_PACK
from ops.aws.cli import AwsOptions
from ops.aws.pulumi import Pulumi
from ops.aws.training.base import DEFAULT_INSTANCE_TYPE, RunRecord, TrainOptions
from ops.errors import OpsError
from ops.paths import Paths
from tests.conftest import REPO

SETTINGS = ("STACK", "BACKEND", "INSTANCE_TYPE", "INSTANCE_COUNT", "MAX_COST", "MAX_HOURS", "RESUME", "MODEL", "RUN")


@pytest.fixture
def parse(monkeypatch: pytest.MonkeyPatch, tmp_path):
    for name in (*SETTINGS, "ENDPOINT"):
        monkeypatch.delenv(name, raising=False)

    def run(command: str, *hp: str, **flags: object) -> AwsOptions:
        args = argparse.Namespace(hp=list(hp), **flags)
        return AwsOptions.parse(command, args, Paths(tmp_path))

    return run


def test_options_are_read_once_into_a_frozen_record(parse, monkeypatch) -> None:
    monkeypatch.setenv("BACKEND", "sagemaker")
    monkeypatch.setenv("INSTANCE_COUNT", "2")
    monkeypatch.setenv("MAX_COST", "3.5")
    options = parse("train", "epochs=3", stack="prod", resume="train-1")
    assert (options.stack, options.backend, options.instance_type, options.instance_count) == (
        "prod",
        "sagemaker",
        DEFAULT_INSTANCE_TYPE,
        2,
    )
    assert options.train == TrainOptions(
        hyperparameters={"epochs": "3"},
        dataset="digits",
        backend="sagemaker",
        instance_type=DEFAULT_INSTANCE_TYPE,
        max_cost=3.5,
        resume="train-1",
        instance_count=2,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.backend = "ecs"  # the checked settings cannot change afterwards


def test_only_the_commands_that_read_a_setting_check_it(parse, monkeypatch) -> None:
    monkeypatch.setenv("BACKEND", "batch")
    monkeypatch.setenv("MAX_COST", "five")
    for command in ("train", "preflight"):
        with pytest.raises(
            OpsError, match=r"^BACKEND=batch is not a training backend: use ecs \(default\) or sagemaker$"
        ):
            parse(command)
    options = parse("deploy", model="train-7")  # deploy reads neither BACKEND nor MAX_COST
    assert (options.model, options.train) == ("train-7", None)
    monkeypatch.setenv("ENDPOINT", "1")
    assert parse("logs").endpoint is True
    with pytest.raises(OpsError, match=r"^`demo` runs on TARGET=local only"):
        parse("demo")


def test_a_training_option_with_an_unknown_backend_is_refused() -> None:
    with pytest.raises(OpsError, match=r"^BACKEND=batch is not a training backend"):
        TrainOptions(hyperparameters={}, backend="batch")


def _record(**extra: object) -> RunRecord:
    return RunRecord(
        run_id="train-1",
        backend="ecs",
        stack="dev",
        created_at="2026-12-02T10:00:00+00:00",
        image="repo:abc-def",
        image_digest="sha256:0",
        hyperparameters={"epochs": "2"},
        channels={"train": "s3://d/digits/train/"},
        model_uri="s3://a/models/train-1/model.tar.gz",
        checkpoint_uri="s3://a/checkpoints/train-1/",
        max_runtime_s=3600,
        max_cost_usd=None,
        usd_per_hour_max=1.2,
        instance_count=1,
        priced_instance_type="g5.xlarge",
        prices="list prices",
        **extra,  # the fields a backend or the end of the run fills in
    )


def test_the_run_record_leaves_out_what_was_never_set() -> None:
    """`make logs` tells an ECS run from a SageMaker one by which log fields run.json has."""
    running = _record(task_arn="arn:task/1", log_group="/g", log_stream="trainer/trainer/1", status="Running")
    saved = running.to_json()
    assert saved["log_stream"] == "trainer/trainer/1"
    assert "log_stream_prefix" not in saved
    assert "exit_code" not in saved, "no exit code before the run stopped"
    assert saved["max_cost_usd"] is None, "no MAX_COST is said, as null"
    stopped = dataclasses.replace(running, status="Stopped", stopped_at="2026-12-02T11:00:00+00:00", reason="Ctrl-C")
    assert stopped.to_json()["exit_code"] is None, "stopped before the trainer ran: exit code null"
    assert stopped.launched_as == "arn:task/1"


def test_ops_and_infra_cli_run_up_with_the_same_policy_pack() -> None:
    """One command line: ops's `pulumi up` and `python -m infra.cli up` attach the same pack."""
    exe = sys.executable  # stands in for the pulumi binary: only its being on PATH is looked at
    ops_up = Pulumi(REPO, "dev", binary=exe)._argv("up", "--yes")
    assert ops_up == [exe, "up", "--yes", "--policy-pack", str(POLICY_PACK), "--stack", "dev", "--non-interactive"]
    assert infra_cli.command("up", "dev", exe) == [exe, "up", "--policy-pack", str(POLICY_PACK), "--stack", "dev"]
    assert (POLICY_PACK / "PulumiPolicy.yaml").is_file()
    assert "--policy-pack" not in Pulumi(REPO, "dev", binary=exe)._argv("destroy", "--yes")
