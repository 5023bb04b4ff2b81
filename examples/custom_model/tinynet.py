"""A user model for deepcloud's trainer: the worked example of docs/trainer.md.

Train with it by putting this file in the job's code directory (``<SAGEMAKER_BASE_DIR>/code/``) or on
``PYTHONPATH``, and setting the hyperparameter ``model=tinynet:build``::

    PYTHONPATH=examples/custom_model make train HP="model=tinynet:build epochs=10"

The trainer calls ``build(num_classes=..., input_shape=(C, H, W))``. The module it returns gets
*normalised* float batches ``[N, C, H, W]`` (the trainer puts the per-channel normalisation in front of it)
and returns logits ``[N, num_classes]``. It is exported with ``torch.export``, so ``forward`` uses only
torch operations and never branches on tensor values.
"""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """Two conv layers (the second halves the resolution), global average pool, linear head."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * channels),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),  # flatten(1), never view(batch, -1): the batch size must stay free
        )
        self.classifier = nn.Linear(2 * channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """The factory named by ``model=tinynet:build``."""
    channels, _height, _width = input_shape
    return TinyNet(channels, num_classes)
