"""The commands behind the Make targets, run as a user runs them, with state in a temporary home."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port, port_is_free, processes_mentioning


def ops(
    home: Path,
    *args: str,
    port: int | None = None,
    target: str | None = None,
    dataset: str | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEEPCLOUD_HOME": str(home)}
    env.pop("TARGET", None)
    env.pop("DATASET", None)
    if target:
        env["TARGET"] = target
    if dataset:
        env["DATASET"] = dataset
    if port:
        env["PORT"] = str(port)
    return subprocess.run(
        [sys.executable, "-m", "ops", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _one_line_error(result: subprocess.CompletedProcess, starts: str) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert lines[0].startswith(f"error: {starts}"), lines[0]
    return lines[0]


@pytest.fixture
def home(tmp_path: Path, dataset: Path) -> Path:
    """A DEEPCLOUD_HOME with the dataset in place (copied from the session's `make data` output)."""
    shutil.copytree(dataset, tmp_path / "home" / "data" / "digits")
    return tmp_path / "home"


NO_AWS = {
    "PATH": "/usr/bin:/bin",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": None,
    "AWS_SECRET_ACCESS_KEY": None,
    "AWS_SESSION_TOKEN": None,
    "AWS_PROFILE": None,
    "DEEPCLOUD_AWS_ENDPOINT_URL": None,
}
"""A machine with neither the pulumi CLI nor AWS credentials (this one, and CI); None removes a variable.
tests/ops/test_aws_cli.py checks every aws command on such a machine."""


def test_unknown_target(tmp_path: Path) -> None:
    _one_line_error(
        ops(tmp_path, "train", target="gcp"), "TARGET=gcp is not a target: use local (default), container or aws"
    )


def test_make_aws_target_gives_the_same_line(tmp_path: Path) -> None:
    env = {**os.environ, "DEEPCLOUD_HOME": str(tmp_path), **NO_AWS}
    env = {name: value for name, value in env.items() if value is not None}
    result = subprocess.run(
        ["make", "-s", "train", "TARGET=aws"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode != 0
    assert "error: the pulumi CLI is not installed" in result.stderr, "make train runs make data, which reads the stack"
    assert "Traceback" not in result.stderr


def test_no_model_for_the_container_target_says_to_train_on_that_target(tmp_path: Path) -> None:
    from ops.errors import OpsError
    from ops.local.train import latest_model
    from ops.paths import Paths

    with pytest.raises(OpsError, match=r"^no trained model found: run `make train TARGET=container` first$"):
        latest_model(Paths(tmp_path), "container")  # a local `make train` would not put one where it looks


def test_steps_out_of_order_say_what_to_run(tmp_path: Path) -> None:
    _one_line_error(ops(tmp_path, "train"), f"no dataset at {tmp_path / 'data' / 'digits'}: run `make data` first")
    _one_line_error(ops(tmp_path, "deploy"), "no trained model found: run `make train` first")
    _one_line_error(ops(tmp_path, "predict"), "nothing is deployed: run `make deploy` first")
    _one_line_error(ops(tmp_path, "train", "--hp", "epochs"), "hyperparameter 'epochs' is not name=value")


@pytest.mark.slow
def test_bad_hyperparameter_fails_the_job_with_the_trainer_message(home: Path) -> None:
    result = ops(home, "train", "--hp", "epochs=3 lr=fast")
    assert result.returncode == 1
    # The job's own log (the trainer's stderr, as the container would print it), then ops' one-line verdict.
    job_log, verdict = result.stderr.strip().splitlines()
    assert job_log == "error: hyperparameter 'lr' must be a finite number, got 'fast'"
    failures = list((home / "local" / "jobs").glob("*/output/failure"))
    assert len(failures) == 1
    job = failures[0].parents[1]
    # said once: the verdict says where, not the reason again (never printed twice)
    assert verdict == (
        f"error: training job {job.name} failed with exit code 1 (its error is above); its folder is {job}"
    )
    # the job's channels are hard links to the dataset, not a second copy of it
    assert (job / "input" / "data" / "train").is_dir()
    assert all(p.stat().st_nlink >= 2 for p in (job / "input" / "data" / "train").rglob("*.png"))
    assert not list((home / "local" / "jobs").glob("*/model/manifest.json"))


@pytest.mark.slow
def test_train_deploy_predict_destroy(home: Path) -> None:
    port = free_port()
    trained = ops(home, "train", "--hp", "epochs=6")
    assert trained.returncode == 0, trained.stderr
    job = next((home / "local" / "jobs").iterdir())
    hyperparameters = json.loads((job / "input" / "config" / "hyperparameters.json").read_text())
    assert hyperparameters == {"epochs": "6"}, "SageMaker writes every hyperparameter as a string"
    for sub in ("input/data/train", "input/data/validation", "input/data/test", "model", "output/data", "checkpoints"):
        assert (job / sub).is_dir(), sub
    lines = trained.stdout.splitlines()
    for said in (
        f"artifact {job / 'model'}",
        f"report {job / 'output' / 'data' / 'report.png'}",
        f"packed {job / 'output' / 'model.tar.gz'}",
    ):
        assert lines.count(said) == 1, said  # once each: the trainer's lines are not repeated by ops
    assert any(line.startswith("validation_loss=") and "validation_accuracy=" in line for line in lines)
    assert (job / "output" / "model.tar.gz").is_file()

    deployed = ops(home, "deploy", port=port)
    assert deployed.returncode == 0, deployed.stderr
    state = json.loads((home / "local" / "server" / "server.json").read_text())
    assert state["port"] == port
    assert state["host"] == "127.0.0.1"

    predicted = ops(home, "predict")
    assert predicted.returncode == 0, predicted.stderr
    assert "accuracy over HTTP" in predicted.stdout
    assert "match" in predicted.stdout
    assert "MISMATCH" not in predicted.stdout

    destroyed = ops(home, "destroy")
    assert destroyed.returncode == 0, destroyed.stderr
    assert f"stopped server pid {state['pid']}" in destroyed.stdout
    assert not (home / "local").exists()
    assert processes_mentioning(str(home)) == []
    assert port_is_free(port)
    assert (home / "data" / "digits" / "test").is_dir(), "destroy keeps the dataset"

    again = ops(home, "destroy")
    assert again.returncode == 0
    assert again.stdout.strip().splitlines()[-1] == "nothing to destroy"


@pytest.mark.slow
def test_deploy_on_a_taken_port_fails_cleanly(home: Path, trained_job: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        port = squatter.getsockname()[1]
        result = ops(home, "deploy", "--model", str(trained_job / "model"), port=port)
    line = _one_line_error(result, f"port {port} on 127.0.0.1 is already in use")
    assert line.endswith(f"pick another port with make deploy PORT={port + 1}")  # what make deploy reads
    assert processes_mentioning(str(trained_job / "model")) == []
    assert not (home / "local" / "server").exists()


@pytest.mark.slow
def test_deploy_of_a_corrupted_artifact_fails_cleanly(home: Path, trained_model: Path) -> None:
    weights = trained_model / "model.pt2"
    weights.write_bytes(weights.read_bytes() + b"tampered")
    port = free_port()
    result = ops(home, "deploy", "--model", str(trained_model), port=port)
    _one_line_error(result, f"server exited with code 1: checksum mismatch for {weights}")
    assert processes_mentioning(str(trained_model)) == []
    assert port_is_free(port)
    assert ops(home, "destroy").stdout.strip().splitlines()[-1] == "nothing to destroy"


def test_make_data_on_an_existing_dataset_says_it_reuses_it(home: Path) -> None:
    again = ops(home, "data")  # the home fixture holds a complete dataset already
    assert again.returncode == 0, again.stderr
    assert f"reusing the dataset already at {home / 'data' / 'digits'} (delete the folder to write it again)" in (
        again.stdout.splitlines()
    )
