"""Training configuration: one dataclass, filled from SageMaker's hyperparameters.json.

SageMaker writes every hyperparameter as a string, so parsing is done here, field by field,
and every error names the field and what it accepts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from trainer.errors import ConfigError

MODELS = ("cnn", "resnet", "mlp", "convnet")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")
RESUME_FREE = MappingProxyType({"resume_free": True})
"""Field metadata of a setting that changes no number of the run (where to log, how often to checkpoint,
how to read the data): a resumed job may change it and still continue exactly. Every other field must
equal the checkpoint's (:meth:`TrainConfig.changed_since`)."""


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
    """Dropout before the classifier head; mlp also applies it after each hidden layer (0 <= x < 1)."""

    width: int = 32
    """Channels of the first conv block; later blocks double it. mlp has 16 * width units per hidden
    layer (>= 4)."""

    model: str = "cnn"
    """Built-in architecture (cnn: the small demo CNN; resnet: a ResNet-style network for larger
    images; mlp: the Keras MNIST MLP; convnet: the Keras "Simple MNIST convnet", for images of at
    least 10x10) or a user factory ``package.module:function`` called as ``function(num_classes=,
    input_shape=)`` and returning an ``nn.Module``; it is imported from the job's code directory
    (``<base>/code``, i.e. /opt/ml/code) or an installed package (docs/trainer.md)."""

    seed: int = 0
    """Seed for python, numpy and torch RNGs and for data shuffling."""

    deterministic: bool = True
    """Use deterministic torch kernels, so the same seed gives the same weights (true/false)."""

    device: str = field(default="auto", metadata=RESUME_FREE)
    """Where to train: auto (cuda when present), cpu, or cuda."""

    log_every_steps: int = field(default=20, metadata=RESUME_FREE)
    """Plain-log cadence in optimizer steps when stderr is not a terminal (>= 1)."""

    checkpoint_every_steps: int = field(default=0, metadata=RESUME_FREE)
    """Write a checkpoint every N optimizer steps; 0 (default) picks N from the measured step and
    checkpoint times so checkpointing costs under 2% of training time. SIGTERM and SIGUSR1 always
    write one (>= 0)."""

    keep_checkpoints: int = field(default=3, metadata=RESUME_FREE)
    """How many of the newest valid checkpoints to keep on disk (>= 1)."""

    checkpoint_s3_uri: str = field(default="", metadata=RESUME_FREE)
    """Also upload checkpoints to this ``s3://bucket/prefix`` and pull the newest back on start, for
    ECS where nothing syncs ``<base>/checkpoints`` (empty: off; SageMaker syncs it by itself)."""

    skip_bad_samples: bool = field(default=False, metadata=RESUME_FREE)
    """Count, report and skip unreadable samples instead of failing on the first one (true/false)."""

    num_workers: int = field(default=0, metadata=RESUME_FREE)
    """DataLoader worker processes (>= 0); with workers, batches come from pinned memory on CUDA."""

    precision: str = "fp32"
    """Autocast precision on CUDA: fp32 (off), bf16, or fp16 (with a grad scaler). CPU trains in fp32."""

    channels_last: bool = False
    """Use the channels_last memory format on CUDA (faster convolutions on tensor cores)."""

    compile: bool = False
    """Wrap the model in torch.compile (true/false); the exported artifact is the uncompiled model."""

    grad_accum_steps: int = 1
    """Micro-batches accumulated per optimizer step (>= 1); the effective batch is
    batch_size * grad_accum_steps * world size."""

    grad_clip_norm: float = 0.0
    """Clip the global gradient norm to this value before each step; 0 disables clipping (>= 0)."""

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "epochs", "an integer >= 1", self.epochs)
        _check(self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size)
        _check(self.lr > 0, "lr", "a number > 0", self.lr)
        _check(self.weight_decay >= 0, "weight_decay", "a number >= 0", self.weight_decay)
        _check(0 <= self.warmup_fraction < 1, "warmup_fraction", "a number in [0, 1)", self.warmup_fraction)
        _check(0 <= self.label_smoothing < 1, "label_smoothing", "a number in [0, 1)", self.label_smoothing)
        _check(0 <= self.dropout < 1, "dropout", "a number in [0, 1)", self.dropout)
        _check(self.width >= 4, "width", "an integer >= 4", self.width)
        _check(
            self.model in MODELS or bool(_FACTORY.match(self.model)),
            "model",
            f"one of {', '.join(MODELS)} or a factory 'package.module:function'",
            self.model,
        )
        _check(self.device in DEVICES, "device", f"one of {', '.join(DEVICES)}", self.device)
        _check(self.log_every_steps >= 1, "log_every_steps", "an integer >= 1", self.log_every_steps)
        _check(
            self.checkpoint_every_steps >= 0, "checkpoint_every_steps", "an integer >= 0", self.checkpoint_every_steps
        )
        _check(self.keep_checkpoints >= 1, "keep_checkpoints", "an integer >= 1", self.keep_checkpoints)
        _check(
            self.checkpoint_s3_uri == "" or self.checkpoint_s3_uri.startswith("s3://"),
            "checkpoint_s3_uri",
            "empty or an s3://bucket/prefix URI",
            self.checkpoint_s3_uri,
        )
        _check(self.num_workers >= 0, "num_workers", "an integer >= 0", self.num_workers)
        _check(self.precision in PRECISIONS, "precision", f"one of {', '.join(PRECISIONS)}", self.precision)
        _check(self.grad_accum_steps >= 1, "grad_accum_steps", "an integer >= 1", self.grad_accum_steps)
        _check(self.grad_clip_norm >= 0, "grad_clip_norm", "a number >= 0", self.grad_clip_norm)

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
                raise ConfigError(f"unknown hyperparameter '{key}': allowed are {', '.join(sorted(known))}")
            values[key] = _parse(key, _type_name(known[key]), value)
        return cls(**values)

    @classmethod
    def load(cls, path: Path, environ: Mapping[str, str] | None = None) -> TrainConfig:
        """``SM_HPS`` when it is set, else ``hyperparameters.json`` at ``path``.

        ``SM_HPS`` is a JSON object of the hyperparameters, as SageMaker's framework containers get it. On ECS
        nothing writes hyperparameters.json, so `make train TARGET=aws` passes them this way (ops/aws/training/ecs.py).
        """
        env = os.environ if environ is None else environ
        if not env.get("SM_HPS"):
            return cls.from_file(path)
        try:
            raw = json.loads(env["SM_HPS"])
        except json.JSONDecodeError as exc:
            raise ConfigError(f"SM_HPS is not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(raw, dict):
            raise ConfigError("SM_HPS must hold a JSON object of name -> value")
        return cls.from_hyperparameters(raw)

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

    @classmethod
    def resume_free(cls) -> frozenset[str]:
        """The fields marked :data:`RESUME_FREE`."""
        return frozenset(f.name for f in fields(cls) if f.metadata.get("resume_free"))

    def changed_since(self, saved: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
        """``name -> (saved, now)`` for every field not marked :data:`RESUME_FREE` whose value differs from
        ``saved`` (a checkpoint's :meth:`to_dict`): what forbids an exact resume."""
        free = self.resume_free()
        return {k: (saved.get(k), v) for k, v in self.to_dict().items() if k not in free and saved.get(k) != v}


def _check(ok: bool, name: str, expected: str, got: Any) -> None:
    if not ok:
        raise ConfigError(f"hyperparameter '{name}' must be {expected}, got {got!r}")


def _type_name(spec: dataclasses.Field[Any]) -> str:
    # Annotations are strings because of `from __future__ import annotations`; a real type only if that goes.
    return spec.type if isinstance(spec.type, str) else getattr(spec.type, "__name__", str(spec.type))


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
