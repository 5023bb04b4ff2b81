"""The order training samples come in: a pure function of (seed, epoch), so a resume mid-epoch is just a count.

:class:`EpochSampler` shards it over ranks like DistributedSampler; :func:`make_loader` gives the DataLoader its own
generator so that building one mid-epoch on resume draws nothing from the global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from trainer.config import TrainConfig
from trainer.data.samples import Split


class EpochSampler(Sampler[int]):
    """A shuffled order that is a pure function of (seed, epoch), sharded over ranks like
    DistributedSampler (padded to a multiple of the world size), and startable mid-epoch."""

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.per_rank = math.ceil(size / world_size)
        self.epoch, self.start = 0, 0

    def set_position(self, epoch: int, start: int) -> None:
        """Epoch, and how many of this rank's samples of it were already consumed."""
        self.epoch, self.start = epoch, start

    def order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        order += order[: self.per_rank * self.world_size - self.size]  # pad so every rank gets as many
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch)[self.start :])

    def __len__(self) -> int:
        return self.per_rank - self.start


def make_loader(split: Split, sampler: EpochSampler, cfg: TrainConfig, device: torch.device) -> DataLoader:
    return DataLoader(
        TensorDataset(split.images, split.targets),
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        # Its own generator: otherwise each new iterator draws a seed from the global RNG, and a
        # loader built mid-epoch on resume would shift every later dropout mask.
        generator=torch.Generator().manual_seed(cfg.seed),
    )
