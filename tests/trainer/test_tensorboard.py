"""TensorBoard event files of real training runs, read back with the tensorboard package's own reader and held
against metrics.jsonl; on ECS (DEEPCLOUD_MODEL_S3_URI) the same files on moto_server's S3 beside the model."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import boto3
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import make_job, run_trainer, stop_trainer_at_step
from trainer.tracking import EPOCH_KEYS, tensorboard_uri

pytestmark = pytest.mark.slow


def _scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in every event file under ``logdir``: tag -> [(step, value)], as TensorBoard shows them."""
    reader = EventAccumulator(str(logdir), size_guidance={"scalars": 0})  # 0: keep all, no reservoir sampling
    reader.Reload()
    return {tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}


def _records(base: Path, kind: str) -> list[dict]:
    lines = (base / "output" / "data" / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def _f32(value: float) -> float:
    """Event files hold scalars as float32 (Summary.Value.simple_value)."""
    return float(np.float32(value))


def _expected(base: Path) -> dict[str, list[tuple[int, float]]]:
    steps, epochs = _records(base, "step"), _records(base, "epoch")
    want = {
        "train/loss": [(r["step"], _f32(r["loss"])) for r in steps],
        "train/lr": [(r["step"], _f32(r["lr"])) for r in steps],
    }
    for key in EPOCH_KEYS:
        want[f"epoch/{key}"] = [(r["epoch"], _f32(r[key])) for r in epochs]
    return want


def _s3_env(moto_server: str, tmp: Path) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


_MACHINE_AWS = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL_S3")
"""Variables of this machine that must not reach the trainer (as tests/trainer/conftest.py's s3_env drops them)."""


def _client(moto_server: str):
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client("s3", endpoint_url=moto_server)


def _new_bucket(moto_server: str) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    _client(moto_server).create_bucket(Bucket=name)
    return name


def _objects(env: dict[str, str], bucket: str, prefix: str) -> dict[str, bytes]:
    client = _client(env["AWS_ENDPOINT_URL"])
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


@pytest.fixture(scope="module")
def ecs_job(tmp_path_factory: pytest.TempPathFactory, dataset: Path, moto_server: str) -> dict:
    """One real 2-epoch run with a test channel, as on ECS: the model and the event files go to moto_server."""
    tmp = tmp_path_factory.mktemp("tensorboard")
    env = _s3_env(moto_server, tmp)
    bucket = _new_bucket(moto_server)
    model_uri = f"s3://{bucket}/models/run-7/model.tar.gz"
    base = make_job(tmp / "job", dataset, {"epochs": "2", "log_every_steps": "3", "seed": "1"})
    with pytest.MonkeyPatch.context() as patch:
        for name in _MACHINE_AWS:
            patch.delenv(name, raising=False)
        result = run_trainer(base, env={**env, "DEEPCLOUD_MODEL_S3_URI": model_uri, "MLFLOW_TRACKING_URI": ""})
    assert result.returncode == 0, result.stderr
    return {"base": base, "env": env, "bucket": bucket, "model_uri": model_uri, "result": result}


def test_event_files_hold_exactly_the_metrics_of_the_run(ecs_job: dict) -> None:
    base = ecs_job["base"]
    logdir = base / "output" / "tensorboard"
    files = sorted(p.name for p in logdir.iterdir())
    assert len(files) == 1, files
    assert files[0].startswith("events.out.tfevents.")
    got = _scalars(logdir)
    want = _expected(base)
    assert len(want["train/loss"]) == 40 // 3, "2 epochs of 20 steps, one record every 3 steps"
    assert [step for step, _ in want["epoch/validation_loss"]] == [1, 2]
    test = json.loads((base / "output" / "data" / "metrics.json").read_text())["metrics"]["test"]
    want["test/loss"] = [(2, _f32(test["loss"]))]
    want["test/accuracy"] = [(2, _f32(test["accuracy"]))]
    assert got == want


def test_on_ecs_the_event_files_go_beside_the_model(ecs_job: dict) -> None:
    bucket, base = ecs_job["bucket"], ecs_job["base"]
    assert tensorboard_uri(ecs_job["model_uri"]) == f"s3://{bucket}/models/run-7/tensorboard/"
    local = {p.name: p.read_bytes() for p in (base / "output" / "tensorboard").iterdir()}
    uploaded = _objects(ecs_job["env"], bucket, "models/run-7/tensorboard/")
    assert uploaded == {f"models/run-7/tensorboard/{name}": data for name, data in local.items()}
    assert f"tensorboard uploaded to s3://{bucket}/models/run-7/tensorboard/" in ecs_job["result"].stdout
    assert set(_objects(ecs_job["env"], bucket, "models/run-7/")) == {"models/run-7/model.tar.gz", *uploaded}, (
        "the model and its event files, side by side"
    )


def test_a_sigterm_stopped_run_leaves_readable_events_on_disk_and_s3_and_resumes_them(
    tmp_path: Path, dataset: Path, moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in _MACHINE_AWS:
        monkeypatch.delenv(name, raising=False)
    env = _s3_env(moto_server, tmp_path)
    bucket = _new_bucket(moto_server)
    run_env = {**env, "DEEPCLOUD_MODEL_S3_URI": f"s3://{bucket}/models/stopped/model.tar.gz", "MLFLOW_TRACKING_URI": ""}
    # No test channel: the resumed run's events are then exactly metrics.jsonl's step and epoch records.
    base = make_job(
        tmp_path / "job",
        dataset,
        {"epochs": "2", "log_every_steps": "2", "seed": "2", "checkpoint_every_steps": "1000"},
        channels=("train", "validation"),
    )
    stopped_run = stop_trainer_at_step(base, 8, run_env)
    assert stopped_run.returncode == 143, stopped_run.stderr
    logdir = base / "output" / "tensorboard"
    stopped = _scalars(logdir)
    steps = _records(base, "step")
    assert steps, "steps were logged before the stop"
    assert stopped["train/loss"] == [(r["step"], _f32(r["loss"])) for r in steps], (
        "every step logged before SIGTERM is in the event file: closed, not lost in the writer's queue"
    )
    uploaded = _objects(env, bucket, "models/stopped/tensorboard/")
    assert sorted(k.rsplit("/", 1)[1] for k in uploaded) == sorted(p.name for p in logdir.iterdir())
    assert "tensorboard uploaded to" in stopped_run.stdout

    resumed = run_trainer(base, env=run_env)
    assert resumed.returncode == 0, resumed.stderr
    assert len(list(logdir.iterdir())) == 2, "a second event file for the resumed process"
    assert _scalars(logdir) == _expected(base), "both files together read as one run, each step once"
