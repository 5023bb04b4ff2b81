"""Speed features: gradient accumulation and clipping everywhere; autocast, channels_last and
torch.compile where CUDA is present (skipped cleanly on CPU-only machines)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import make_job, run_trainer

pytestmark = pytest.mark.slow
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _train(tmp_path: Path, dataset: Path, name: str, **hp: str) -> dict:
    base = make_job(tmp_path / name, dataset, {"epochs": "3", "dropout": "0", "seed": "2", **hp})
    result = run_trainer(base)
    assert result.returncode == 0, result.stderr
    return json.loads((base / "output" / "data" / "metrics.json").read_text())


def test_gradient_accumulation_matches_the_larger_batch(tmp_path: Path, dataset: Path) -> None:
    whole = _train(tmp_path, dataset, "whole", batch_size="64")
    accumulated = _train(tmp_path, dataset, "accumulated", batch_size="32", grad_accum_steps="2")
    a = whole["history"]["validation_loss"][-1]
    b = accumulated["history"]["validation_loss"][-1]
    # Same samples per optimizer step; BatchNorm sees half-batches, so close rather than equal.
    assert abs(a - b) / a < 0.10, (a, b)


def test_gradient_clipping_and_cpu_ignoring_autocast(tmp_path: Path, dataset: Path) -> None:
    run = _train(tmp_path, dataset, "clip", grad_clip_norm="0.5", precision="bf16", channels_last="true")
    assert run["metrics"]["validation"]["accuracy"] > 0.8


@needs_cuda
@pytest.mark.parametrize(
    "hp",
    [
        {"precision": "bf16"},
        {"precision": "fp16"},
        {"channels_last": "true"},
        {"compile": "true"},
        {"num_workers": "2"},
    ],
)
def test_cuda_speed_features_train_and_export(tmp_path: Path, dataset: Path, hp: dict[str, str]) -> None:
    run = _train(tmp_path, dataset, "cuda", device="cuda", deterministic="false", **hp)
    assert run["metrics"]["validation"]["accuracy"] > 0.9
