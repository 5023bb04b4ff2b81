"""Process and device set-up, in one place so every entry point agrees on it."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from trainer.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Runtime:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def compute_init(device: str, seed: int, deterministic: bool) -> Runtime:
    """Pick the device, seed every RNG, and set determinism.

    Single process for now; torchrun's RANK/WORLD_SIZE are read so that a multi-process launch
    fails with the fix rather than silently training N copies.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size != 1:
        raise ConfigError(
            f"WORLD_SIZE={world_size}: multi-process training is not supported yet; "
            "run a single process (python -m trainer)"
        )
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("hyperparameter 'device' is 'cuda' but no CUDA device is visible: use auto or cpu")
    resolved = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                            ("cpu" if device == "auto" else device))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this workspace setting before its first call to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    return Runtime(rank=0, world_size=1, device=resolved)

