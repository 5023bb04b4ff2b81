"""Spot-safe training, proven with real processes: SIGKILL anywhere, resume, and end bitwise-identical."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import PYTHON, REPO, make_job, run_trainer

pytestmark = pytest.mark.slow

HP = {"epochs": "3", "seed": "3", "checkpoint_every_steps": "4", "log_every_steps": "1", "keep_checkpoints": "3"}
STEPS = 3 * 20  # 1257 training images, batch 64


def _weights(base: Path) -> dict[str, torch.Tensor]:
    return torch.export.load(base / "model" / "model.pt2").state_dict


def _start(base: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [PYTHON, "-m", "trainer", "train"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SAGEMAKER_BASE_DIR": str(base)},
    )


def _run_until_step(proc: subprocess.Popen, step: int) -> None:
    for line in proc.stdout:
        if line.startswith(f"step={step} "):
            return
    raise AssertionError(f"the trainer ended before step {step}: {proc.stderr.read()}")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Path:
    base = make_job(tmp_path_factory.mktemp("uninterrupted"), dataset, HP)
    result = run_trainer(base)
    assert result.returncode == 0, result.stderr
    return base


def _assert_same_run(resumed: Path, reference: Path) -> None:
    a, b = _weights(resumed), _weights(reference)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == [], f"weights differ after resume: {different}"
    history = [
        json.loads((base / "output" / "data" / "metrics.json").read_text())["history"] for base in (resumed, reference)
    ]
    for key in ("train_loss", "train_accuracy", "validation_loss", "validation_accuracy", "lr"):
        assert history[0][key] == history[1][key], key


def test_sigkill_at_a_random_step_then_resume_is_bitwise_identical(
    tmp_path: Path, dataset: Path, uninterrupted: Path
) -> None:
    kill_at = random.Random().randint(5, STEPS - 5)
    base = make_job(tmp_path / "job", dataset, HP)
    proc = _start(base)
    _run_until_step(proc, kill_at)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (base / "model" / "manifest.json").exists()
    newest = max(
        int(p.name.split("-")[1]) for p in (base / "checkpoints").glob("step-*") if (p / "manifest.json").exists()
    )
    result = run_trainer(base)
    assert result.returncode == 0, f"kill_at={kill_at}: {result.stderr}"
    events = [json.loads(line) for line in (base / "output" / "data" / "metrics.jsonl").read_text().splitlines()]
    resumed = [e for e in events if e["type"] == "resumed"]
    assert len(resumed) == 1
    assert resumed[0]["step"] == newest, f"kill_at={kill_at}"
    assert newest >= kill_at - 4
    _assert_same_run(base, uninterrupted)


def test_corrupted_newest_checkpoint_is_skipped_and_the_run_still_matches(
    tmp_path: Path, dataset: Path, uninterrupted: Path
) -> None:
    base = make_job(tmp_path / "job", dataset, HP)
    proc = _start(base)
    _run_until_step(proc, 30)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    newest = max((base / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    state = newest / "state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 3] ^= 0xFF
    state.write_bytes(bytes(data))
    result = run_trainer(base)
    assert result.returncode == 0, result.stderr
    assert f"checkpoint {newest} skipped:" in result.stdout
    assert "does not match its sha256 (corrupted)" in result.stdout
    _assert_same_run(base, uninterrupted)


def test_sigterm_checkpoints_and_exits_within_budget_without_failure(tmp_path: Path, dataset: Path) -> None:
    base = make_job(tmp_path / "job", dataset, {**HP, "checkpoint_every_steps": "1000"})
    proc = _start(base)
    _run_until_step(proc, 10)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=100)
    elapsed = time.monotonic() - sent
    stderr = proc.stderr.read()
    assert code == 143, stderr
    assert elapsed < 100
    assert not (base / "output" / "failure").exists(), "a requested stop is not a failure"
    checkpoints = sorted(p.name for p in (base / "checkpoints").iterdir())
    assert len(checkpoints) == 1
    step = int(checkpoints[0].split("-")[1])
    assert step >= 10
    assert stderr.strip().splitlines()[-1] == (
        f"stopped on SIGTERM at step {step}; checkpoint {base / 'checkpoints' / checkpoints[0]}: "
        "restart the job to resume"
    )
    resumed = run_trainer(base)
    assert resumed.returncode == 0
    said = [line for line in resumed.stdout.splitlines() if line.startswith("resumed ")]
    assert len(said) == 1  # one line that says it resumed, and from where
    assert said[0].startswith(f"resumed path={base / 'checkpoints' / checkpoints[0]} step={step} ")


def test_sigusr1_writes_a_checkpoint_and_training_goes_on(tmp_path: Path, dataset: Path) -> None:
    base = make_job(tmp_path / "job", dataset, {**HP, "checkpoint_every_steps": "1000"})
    proc = _start(base)
    _run_until_step(proc, 10)
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    lines = [line for line in out.splitlines() if "reason=sigusr1" in line]
    assert len(lines) == 1
    assert lines[0].startswith("checkpoint step=")  # one line that says what happened
    assert len(list((base / "checkpoints").glob("step-*"))) == 1
    assert (base / "model" / "manifest.json").exists()


def test_resume_with_other_hyperparameters_is_refused(tmp_path: Path, dataset: Path) -> None:
    base = make_job(tmp_path / "job", dataset, HP)
    proc = _start(base)
    _run_until_step(proc, 10)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    (base / "input" / "config" / "hyperparameters.json").write_text(json.dumps({**HP, "lr": "0.01"}))
    result = run_trainer(base)
    assert result.returncode == 1
    assert "the newest checkpoint was written with other hyperparameters (lr=0.003 -> 0.01)" in result.stderr


def test_checkpoints_go_to_s3_and_a_fresh_machine_resumes_from_them(
    tmp_path: Path, dataset: Path, uninterrupted: Path, s3_env: dict[str, str], bucket: str
) -> None:
    """The ECS case: nothing syncs <base>/checkpoints, and the replacement task starts with an empty disk."""
    import boto3

    uri = f"s3://{bucket}/jobs/demo/checkpoints"
    base = make_job(tmp_path / "job", dataset, {**HP, "checkpoint_s3_uri": uri})
    proc = subprocess.Popen(
        [PYTHON, "-m", "trainer", "train"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **s3_env, "SAGEMAKER_BASE_DIR": str(base)},
    )
    _run_until_step(proc, 30)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
    # The process runs on while the test reads its output, so it may have passed step 30 when killed.
    committed = [int(k.split("/")[3].split("-")[1]) for k in keys if k.endswith("/manifest.json")]
    newest = max(committed)
    assert newest >= 28
    assert f"jobs/demo/checkpoints/step-{newest}/state.pt" in keys

    fresh = make_job(tmp_path / "fresh", dataset, {**HP, "checkpoint_s3_uri": uri})
    result = run_trainer(fresh, env=s3_env)
    assert result.returncode == 0, result.stderr
    events = [json.loads(x) for x in (fresh / "output" / "data" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["type"] == "resumed"] == [newest]
    _assert_same_run(fresh, uninterrupted)
