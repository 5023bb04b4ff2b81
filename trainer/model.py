"""The model zoo. Every model takes raw pixels in [0, 255] and normalises inside, so the exported
artifact needs no preprocessing code on the serving side beyond decoding pixels."""

from __future__ import annotations

import torch
from torch import nn


class Normalize(nn.Module):
    """(x / 255 - mean) / std per channel, with statistics measured on the training set."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x / 255.0 - self.mean) / self.std


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Three conv blocks (width, 2w, 4w) with one 2x2 pool, global average pool, linear head.

    Sized for small images such as 8x8 digits: about 100k parameters at width 32.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int, dropout: float,
                 mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(
            _block(in_channels, width),
            _block(width, 2 * width),
            nn.MaxPool2d(2),
            _block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))


def build_model(name: str, *, in_channels: int, num_classes: int, width: int, dropout: float,
                mean: list[float], std: list[float]) -> nn.Module:
    if name == "cnn":
        return SmallCNN(in_channels, num_classes, width, dropout, mean, std)
    raise ValueError(f"unknown model {name!r}")  # TrainConfig already validated the name
