"""The trainer image as SageMaker runs a training job: `docker run <image> train` as root, /opt/ml a root-owned bind
mount laid out as SageMaker lays it out (input/config/hyperparameters.json with string values, input/data/<channel>/),
the model expected in /opt/ml/model, the reason for a failure in /opt/ml/output/failure, and StopTrainingJob as
SIGTERM with SIGKILL 120 s later (`docker stop -t 120`). Sources: AWS, "Use Your Own Training Algorithms"
(How Amazon SageMaker Runs Your Training Image; How Amazon SageMaker Provides Training Information)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import make_job
from tests.container.conftest import JOB_HP, Docker, run_sagemaker_job
from tests.trainer.test_resume import _assert_same_run

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(900)]

RUN_AS = (10001, 10001)
"""DEEPCLOUD_RUN_AS of trainer/Dockerfile: who the trainer becomes once it has handed the layout over."""
TOTAL_STEPS = 10 * 20
STOP_AT = 10


def _owners(root: Path) -> set[tuple[int, int]]:
    return {(p.lstat().st_uid, p.lstat().st_gid) for p in (root, *root.rglob("*"))}


def test_trains_as_root_on_a_bind_mounted_opt_ml(sagemaker_job: Path) -> None:
    base = sagemaker_job
    manifest = json.loads((base / "model" / "manifest.json").read_text())
    assert (base / "model" / "model.pt2").is_file()
    assert manifest["metrics"]["test"]["accuracy"] >= 0.95, manifest["metrics"]
    assert manifest["training"]["config"]["epochs"] == 10, "the string '10' of hyperparameters.json, parsed"
    assert (base / "output" / "data" / "report.png").is_file()
    assert not (base / "output" / "failure").exists()
    for written in ("model", "output", "checkpoints"):
        assert _owners(base / written) == {RUN_AS}, f"{written}/ is not all the unprivileged user's"
    assert (base.stat().st_uid, (base / "input").stat().st_uid) == (0, 0), "what SageMaker provides stays root's"


def test_a_bad_hyperparameter_exits_1_with_output_failure(
    docker: Docker, images: dict[str, str], dataset: Path, tmp_path: Path
) -> None:
    base = make_job(tmp_path / "ml", dataset, {**JOB_HP, "lr": "fast"})
    name, done = run_sagemaker_job(docker, images["trainer"], base)
    assert done.returncode == 1, docker.logs(name)[-3000:]
    message = "hyperparameter 'lr' must be a finite number, got 'fast'"
    assert (base / "output" / "failure").read_text() == message + "\n"
    assert done.stderr.strip().splitlines()[-1] == f"error: {message}"
    assert "Traceback" not in done.stderr
    assert list((base / "model").iterdir()) == [], "no partial model"
    assert not list((base / "checkpoints").iterdir()), "no checkpoint of a job that never started"


def _follow_until(docker: Docker, name: str, prefix: str, timeout: float = 300) -> None:
    follow = subprocess.Popen(
        docker.engine.argv("logs", "--follow", name),
        env={**os.environ, **docker.engine.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + timeout
    try:
        assert follow.stdout is not None
        for line in follow.stdout:
            if line.startswith(prefix):
                return
            assert time.monotonic() < deadline, f"no line starting {prefix!r} within {timeout:.0f} s"
        raise AssertionError(f"the container ended before printing {prefix!r}:\n{docker.logs(name)[-3000:]}")
    finally:
        follow.terminate()
        follow.wait(timeout=30)


def test_docker_stop_checkpoints_exits_143_and_the_next_run_resumes_bitwise_equal(
    docker: Docker, images: dict[str, str], dataset: Path, tmp_path: Path, sagemaker_job: Path
) -> None:
    base = make_job(tmp_path / "ml", dataset, JOB_HP)
    name, done = run_sagemaker_job(docker, images["trainer"], base, detach=True)
    assert done.returncode == 0, done.stderr
    _follow_until(docker, name, f"step={STOP_AT} ")
    started = time.monotonic()
    docker("stop", "--time", "120", name, timeout=180)  # StopTrainingJob: SIGTERM, SIGKILL after 120 s
    stopped_in = time.monotonic() - started
    state = docker.state(name)
    assert state["ExitCode"] == 143, f"{state}\n{docker.logs(name)[-3000:]}"
    assert not state["OOMKilled"]
    assert stopped_in < 60, f"the trainer took {stopped_in:.0f} s to stop; SageMaker kills it at 120 s"
    assert "stopped on SIGTERM at step" in docker.logs(name)
    assert not (base / "output" / "failure").exists(), "a stop is not a failure"
    assert not (base / "model" / "manifest.json").exists(), "stopped before the end"
    committed = [
        int(p.name.split("-")[1]) for p in (base / "checkpoints").glob("step-*") if (p / "manifest.json").is_file()
    ]
    assert committed, "no committed checkpoint after the stop"
    assert STOP_AT <= max(committed) < TOTAL_STEPS

    name, done = run_sagemaker_job(docker, images["trainer"], base)  # the same folder, as a restarted job gets it
    assert done.returncode == 0, docker.logs(name)[-3000:]
    events = [json.loads(line) for line in (base / "output" / "data" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["type"] == "resumed"] == [max(committed)]
    _assert_same_run(base, sagemaker_job)
