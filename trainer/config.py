"""Training configuration: one dataclass, filled from SageMaker's hyperparameters.json.

SageMaker writes every hyperparameter as a string, so parsing is done here, field by field,
and every error names the field and what it accepts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from trainer.errors import ConfigError

MODELS = ("cnn",)
DEVICES = ("auto", "cpu", "cuda")
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


@dataclass(kw_only=True, slots=True)
class TrainConfig:
    epochs: int = 30
    """Full passes over the training channel (>= 1)."""

    batch_size: int = 64
    """Samples per optimizer step (>= 1)."""

    lr: float = 3e-3
    """Peak learning rate of AdamW, reached after warmup (> 0)."""

    weight_decay: float = 0.05
    """AdamW decoupled weight decay, applied to weights only, not to biases or norms (>= 0)."""

    warmup_fraction: float = 0.1
    """Fraction of all steps spent warming the LR up linearly from 0; the rest is a cosine decay
    to 0 (0 <= x < 1)."""

    label_smoothing: float = 0.0
    """Cross-entropy label smoothing (0 <= x < 1)."""

    dropout: float = 0.1
    """Dropout before the classifier head (0 <= x < 1)."""

    width: int = 32
    """Channels of the first conv block; later blocks double it (>= 4)."""

    model: str = "cnn"
    """Architecture from the model zoo (one of: cnn)."""

    seed: int = 0
    """Seed for python, numpy and torch RNGs and for data shuffling."""

    deterministic: bool = True
    """Use deterministic torch kernels, so the same seed gives the same weights (true/false)."""

    device: str = "auto"
    """Where to train: auto (cuda when present), cpu, or cuda."""

    log_every_steps: int = 20
    """Plain-log cadence in optimizer steps when stderr is not a terminal (>= 1)."""

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "epochs", "an integer >= 1", self.epochs)
        _check(self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size)
        _check(self.lr > 0, "lr", "a number > 0", self.lr)
        _check(self.weight_decay >= 0, "weight_decay", "a number >= 0", self.weight_decay)
        _check(0 <= self.warmup_fraction < 1, "warmup_fraction", "a number in [0, 1)", self.warmup_fraction)
        _check(0 <= self.label_smoothing < 1, "label_smoothing", "a number in [0, 1)", self.label_smoothing)
        _check(0 <= self.dropout < 1, "dropout", "a number in [0, 1)", self.dropout)
        _check(self.width >= 4, "width", "an integer >= 4", self.width)
        _check(self.model in MODELS, "model", f"one of {', '.join(MODELS)}", self.model)
        _check(self.device in DEVICES, "device", f"one of {', '.join(DEVICES)}", self.device)
        _check(self.log_every_steps >= 1, "log_every_steps", "an integer >= 1", self.log_every_steps)

    @classmethod
    def from_hyperparameters(cls, raw: dict[str, Any]) -> TrainConfig:
        """Build from a hyperparameters mapping whose values are strings (as SageMaker writes them).

        Keys starting with ``sagemaker_`` are the platform's own and are ignored.
        """
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key.startswith("sagemaker_"):
                continue
            if key not in known:
                raise ConfigError(
                    f"unknown hyperparameter '{key}': allowed are {', '.join(sorted(known))}"
                )
            values[key] = _parse(key, known[key].type, value)
        return cls(**values)

    @classmethod
    def from_file(cls, path: Path) -> TrainConfig:
        """Read ``hyperparameters.json``; a missing file means all defaults."""
        if not path.exists():
            return cls()
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a JSON object of name -> string value")
        return cls.from_hyperparameters(raw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(ok: bool, name: str, expected: str, got: Any) -> None:
    if not ok:
        raise ConfigError(f"hyperparameter '{name}' must be {expected}, got {got!r}")


def _parse(name: str, annotation: str, value: Any) -> Any:
    # Annotations are strings because of `from __future__ import annotations`.
    text = str(value).strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        # The SageMaker Python SDK JSON-encodes each value, so a string arrives as "\"cpu\"".
        with contextlib.suppress(json.JSONDecodeError):
            text = str(json.loads(text)).strip()
    try:
        if annotation == "int":
            if isinstance(value, bool) or not text.lstrip("-").isdigit():
                raise ValueError
            return int(text)
        if annotation == "float":
            number = float(text)
            if number != number or number in (float("inf"), float("-inf")):
                raise ValueError
            return number
        if annotation == "bool":
            lowered = text.lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError
    except ValueError:
        kind = {"int": "an integer", "float": "a finite number", "bool": "true or false"}[annotation]
        raise ConfigError(f"hyperparameter '{name}' must be {kind}, got {value!r}") from None
    return text
