"""DDP on CPU with gloo: two processes train like one with the same global batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PYTHON, REPO, free_port, make_job, run_trainer
from trainer.distributed import torchrun_command, visible_gpus

HP = {"epochs": "4", "dropout": "0", "seed": "1", "checkpoint_every_steps": "7"}
LOSS_TOLERANCE = 0.10
"""Relative difference allowed between the final validation losses: the processes normalise with
per-process BatchNorm statistics (half the batch each), so the runs are close, not identical."""


def torchrun(base: Path, nproc: int, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=nproc -m trainer train`` on this host (loopback), for the job at ``base``."""
    command = [PYTHON, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={free_port()}",
               "-m", "trainer", "train"]
    # Its own process group, so a hang cannot leave orphaned workers behind: the whole group is killed.
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            env={**os.environ, "SAGEMAKER_BASE_DIR": str(base), **(env or {})})
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"torchrun hung:\n{err[-3000:]}") from None
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def _final(base: Path) -> dict:
    return json.loads((base / "output" / "data" / "metrics.json").read_text())


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path: Path, dataset: Path) -> None:
    one = make_job(tmp_path / "one", dataset, {**HP, "batch_size": "64"})
    result = run_trainer(one, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    two = make_job(tmp_path / "two", dataset, {**HP, "batch_size": "32"})
    result = torchrun(two, 2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world_size=2" in result.stdout
    assert [line for line in result.stdout.splitlines() if line.startswith("epoch=1 ")] != []
    assert len([line for line in result.stdout.splitlines() if line.startswith("epoch=1 ")]) == 1, "rank 0 logs"
    single = _final(one)["history"]["validation_loss"][-1]
    double = _final(two)["history"]["validation_loss"][-1]
    assert abs(single - double) / single < LOSS_TOLERANCE, (single, double)
    assert sorted(p.name for p in (two / "model").iterdir()) == ["manifest.json", "model.pt2"]

    # Resume under DDP: every rank restores the same checkpoint and the run completes again.
    first_history = _final(two)["history"]
    (two / "model" / "manifest.json").unlink()
    newest = max(int(p.name.split("-")[1]) for p in (two / "checkpoints").glob("step-*"))
    again = torchrun(two, 2)
    assert again.returncode == 0, again.stderr[-3000:]
    events = [json.loads(x) for x in (two / "output" / "data" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["type"] == "resumed"] == [newest]
    resumed_history = _final(two)["history"]
    assert len(resumed_history["validation_loss"]) == 4, "the curves of the epochs before the resume survive"
    assert resumed_history["validation_loss"][:3] == first_history["validation_loss"][:3]


def test_sagemaker_multi_host_relaunches_under_torchrun() -> None:
    command = torchrun_command(("algo-1", "algo-2"), "algo-2", gpus=4, environ={})
    assert command[1:] == ["-m", "torch.distributed.run", "--nnodes=2", "--node_rank=1", "--nproc_per_node=4",
                           "--master_addr=algo-1", "--master_port=29500", "--rdzv-backend=static",
                           "--rdzv-conf=timeout=600", "--max-restarts=0", "-m", "trainer", "train"]
    bounded = torchrun_command(("algo-1", "algo-2"), "algo-1", gpus=1, environ={}, rendezvous_timeout_s=7.5)
    assert bounded[4:6] == ["--node_rank=0", "--nproc_per_node=1"]
    assert "--rdzv-conf=timeout=8" in bounded, "a fractional timeout rounds up, never down to 0"
    assert torchrun_command(("algo-1",), "algo-1", gpus=1, environ={}) is None
    assert torchrun_command(("algo-1", "algo-2"), "algo-1", gpus=8, environ={"WORLD_SIZE": "16"}) is None
    assert visible_gpus({"SM_NUM_GPUS": "8"}) == 8
