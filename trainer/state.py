"""The training state: everything a checkpoint holds, saved and restored through one list of parts.

:class:`TrainState` is a dataclass whose every field is a part with ``state_dict()`` and
``load_state_dict()`` (torch's modules, optimizers, schedulers and grad scalers already are; the rest are
here). Its ``state_dict`` has one key a field and its ``load_state_dict`` restores exactly those keys, so a
part cannot be saved and forgotten on restore, and a checkpoint with a key more or less is refused.
"""

from __future__ import annotations

from dataclasses import Field, asdict, dataclass, field, fields
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from trainer.config import TrainConfig
from trainer.errors import ConfigError
from trainer.rng import RankRngs


class Stateful(Protocol):
    """A part of the state: torch's pair of methods, whatever the part returns and takes back."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any, /) -> object: ...


class _Fields:
    """state_dict/load_state_dict of a dataclass: its fields by name, all of them on both ways."""

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]  # what makes a dataclass one, for the type checker

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_keys(type(self).__name__, {f.name for f in fields(self)}, state)
        for name, value in state.items():
            setattr(self, name, value)


@dataclass(slots=True)
class History(_Fields):
    """Per-epoch curves; what the report plots and metrics.json records."""

    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    validation_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(slots=True)
class Progress(_Fields):
    """Where the run is; restoring it puts the loop back exactly here."""

    step: int = 0
    """Optimizer steps done."""
    epoch: int = 0
    """Current epoch, 0-based."""
    micro_batch: int = 0
    """Micro-batches of the current epoch already consumed (per rank)."""
    loss_sum: float = 0.0
    """Sum of the training loss over the samples of the current epoch seen so far (per rank)."""
    correct: int = 0
    """Correct predictions among them."""
    seen: int = 0
    """How many samples that is."""


class SavedConfig:
    """The run's hyperparameters. Saved for the record; on restore, checked: only fields marked
    :data:`trainer.config.RESUME_FREE` may differ, since any other would make the resumed run another run."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def state_dict(self) -> dict[str, Any]:
        return self.cfg.to_dict()

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        if changed := self.cfg.changed_since(saved):
            detail = ", ".join(f"{k}={old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise ConfigError(
                f"the newest checkpoint was written with other hyperparameters ({detail}): "
                "restore them, or clear the checkpoints to start over"
            )


class SavedWorldSize:
    """How many processes trained. Checked on restore: each rank's data shard and RNG depend on it."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size

    def state_dict(self) -> int:
        return self.world_size

    def load_state_dict(self, saved: int) -> None:
        if saved != self.world_size:
            raise ConfigError(
                f"the newest checkpoint was written by {saved} processes, this job has "
                f"{self.world_size}: exact resume needs the same number; clear the checkpoints to start over"
            )


@dataclass(slots=True)
class TrainState:
    """Every part of a run a checkpoint holds. Restored in field order, so the checks come before the weights."""

    config: SavedConfig
    world_size: SavedWorldSize
    model: nn.Module
    """The unwrapped model: what the artifact exports, not its DDP or torch.compile wrapper."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    progress: Progress
    history: History
    rng: RankRngs
    """Every rank's generators; gathering them is a collective, so every rank calls :meth:`state_dict`."""

    def parts(self) -> dict[str, Stateful]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def state_dict(self) -> dict[str, Any]:
        return {name: part.state_dict() for name, part in self.parts().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore every part from ``state``; ConfigError when it has a key more or less than the parts."""
        parts = self.parts()
        _check_keys("the checkpoint", set(parts), state)
        for name, part in parts.items():
            part.load_state_dict(state[name])


def _check_keys(what: str, expected: set[str], state: dict[str, Any]) -> None:
    missing, unknown = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unknown:
        raise ConfigError(
            f"{what} lacks {', '.join(missing) or 'nothing'} and has {', '.join(unknown) or 'nothing'} more than "
            "this trainer restores: it was written by another version; clear the checkpoints to start over"
        )
