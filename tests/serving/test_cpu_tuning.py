"""serving/tuning.py changes how a model runs on CPU, never what it answers.

Whether channels-last is kept for a model is a timing question, so these tests assert only what does not
depend on timing: the answers, the fusion (not timed), and the models the layout must never be used for.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bench.serve import write_artifact
from serving.artifact import Artifact, load_artifact
from serving.program import ArchiveProgram
from serving.runner import predict
from serving.tuning import tune_for_cpu


@pytest.fixture(scope="module")
def bench_cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir = tmp_path_factory.mktemp("tuning") / "cnn"
    write_artifact("cnn", model_dir)
    return model_dir


def _pixels(shape: tuple[int, ...], batch: int = 5) -> np.ndarray:
    return np.random.default_rng(7).uniform(0, 255, (batch, *shape)).astype(np.float32)


def test_tuning_keeps_the_answers_and_fuses_the_conv_relu_pairs(bench_cnn: Path) -> None:
    plain = load_artifact(bench_cnn)
    tuned = tune_for_cpu(load_artifact(bench_cnn), 16)
    assert isinstance(tuned.module, ArchiveProgram)
    assert tuned.module.fused == 3
    batch = _pixels(plain.input_shape)
    np.testing.assert_allclose(predict(tuned, batch), predict(plain, batch), rtol=1e-4, atol=1e-4)


class Flattening(nn.Module):
    """`view` on a convolution's activation: fails on a channels-last tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x / 255))
        return self.head(y.view(y.shape[0], -1))


def _artifact(module: nn.Module, shape: list[int], device: str = "cpu") -> Artifact:
    manifest = {
        "model": {"max_batch_size": 64},
        "input": {"shape": shape},
        "labels": [str(i) for i in range(10)],
        "preprocessing": {"pixel_range": [0, 255]},
    }
    return Artifact(model_dir=Path("."), manifest=manifest, module=module, device=device)


def test_a_model_that_breaks_in_channels_last_stays_in_nchw(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    batch_dim = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(Flattening().eval(), (torch.rand(2, 3, 8, 8),), dynamic_shapes=({0: batch_dim},))
    torch.export.save(program, tmp_path / "flattening.pt2")
    plain = _artifact(ArchiveProgram.load(tmp_path / "flattening.pt2"), [3, 8, 8])
    expected = predict(plain, _pixels((3, 8, 8)))
    with caplog.at_level(logging.INFO, logger="serving.tuning"):
        tuned = tune_for_cpu(plain, 8)
    assert tuned.channels_last is False
    assert "channels-last layout fails for this model" in caplog.text
    assert all(t.is_contiguous() for t in tuned.module.buffers())  # the trial was undone
    np.testing.assert_array_equal(predict(tuned, _pixels((3, 8, 8))), expected)


def test_models_that_are_not_image_models_on_cpu_are_left_alone(bench_cnn: Path) -> None:
    on_gpu = dataclasses.replace(load_artifact(bench_cnn), device="cuda")
    assert tune_for_cpu(on_gpu, 16) is on_gpu
    vector = _artifact(nn.Linear(12, 10), [12])
    assert tune_for_cpu(vector, 16) is vector
