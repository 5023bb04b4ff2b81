"""Pick, at load time, the fastest of equivalent ways to run a model on CPU.

Two choices, each kept only when it runs and agrees with the model as exported within 1e-4 (relative
to the largest logit) on a seeded batch:

- **channels-last layout.** PyTorch's CPU convolutions (oneDNN) work in NHWC internally: a model fed NCHW
  tensors pays a reorder of its activations in every call, which NHWC saves (docs/serving.md, "Measured", on
  this project's benchmark CNN). The layout is memory only, but a graph may hold an op that assumes
  contiguous strides (``view`` on an activation), and some models (depthwise convolutions) run slower in
  NHWC: it is also timed, and kept only when faster.
- **convolution + ReLU fused** into one oneDNN call (serving/program.py, ``fuse_conv_relu``; programs
  run by this server's interpreter only): it removes a pass over each activation (a smaller gain, in
  "Measured" too), bit for bit the same on the benchmark CNN. Not timed: a few runs at load are noisier than its gain.

The server logs the choices and ``describe()`` reports them.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from serving.program import ArchiveProgram

if TYPE_CHECKING:
    from serving.artifact import Artifact

log = logging.getLogger("serving.tuning")

TOLERANCE = 1e-4
"""Largest difference from the exported model's logits, relative to the largest logit (floor 1)."""
TIMED_RUNS = 3


def _best_time(module: torch.nn.Module, x: torch.Tensor) -> float:
    module(x)  # oneDNN builds its kernels on the first call of a shape
    best = float("inf")
    for _ in range(TIMED_RUNS):
        start = time.perf_counter()
        module(x)
        best = min(best, time.perf_counter() - start)
    return best


def _trial(
    name: str,
    module: torch.nn.Module,
    x: torch.Tensor,
    reference: torch.Tensor,
    baseline: float | None,
    apply: Callable[[], object],
    undo: Callable[[], object],
) -> float | None:
    """Apply a change; keep it (returning its time, or 0 untimed) if it runs, agrees, and is faster than
    ``baseline`` seconds (when given), else undo it and return None."""
    apply()
    try:
        out = module(x)
        scale = max(1.0, float(reference.abs().max()))
        if out.shape != reference.shape or float((out - reference).abs().max()) > TOLERANCE * scale:
            log.info("%s changes this model's outputs by more than %g; not using it", name, TOLERANCE)
        elif baseline is None:
            log.info("%s: same outputs; using it", name)
            return 0.0
        elif (seconds := _best_time(module, x)) < baseline:
            log.info(
                "%s: %.2f ms per batch of %d, against %.2f ms; using it", name, seconds * 1e3, len(x), baseline * 1e3
            )
            return seconds
        else:
            log.info(
                "%s is not faster for this model (%.2f against %.2f ms); not using it",
                name,
                seconds * 1e3,
                baseline * 1e3,
            )
    except Exception as exc:  # any failure only means: not this way
        log.info("%s fails for this model (%s: %s); not using it", name, type(exc).__name__, exc)
    undo()
    return None


def tune_for_cpu(artifact: Artifact, batch_size: int) -> Artifact:
    """``artifact``, run the fastest equivalent way measured on a batch of ``batch_size`` (at most 32)."""
    module = artifact.module
    if artifact.device != "cpu" or len(artifact.input_shape) != 3:
        return artifact
    low, high = artifact.pixel_range
    generator = torch.Generator().manual_seed(0)
    x = low + (high - low) * torch.rand((max(2, min(batch_size, 32)), *artifact.input_shape), generator=generator)
    with torch.inference_mode():
        reference = module(x)
        best = _best_time(module, x)
        channels_last = False
        if any(t.dim() == 4 for t in (*module.parameters(), *module.buffers())):
            x_nhwc = x.contiguous(memory_format=torch.channels_last)
            seconds = _trial(
                "channels-last layout",
                module,
                x_nhwc,
                reference,
                best,
                # nn.Module.to takes memory_format at run time; torch's stubs list no such overload
                lambda: module.to(memory_format=torch.channels_last),  # type: ignore[call-overload]
                lambda: module.to(memory_format=torch.contiguous_format),  # type: ignore[call-overload]
            )
            if seconds is not None:
                x, best, channels_last = x_nhwc, seconds, True
        if isinstance(module, ArchiveProgram) and (pairs := module.fuse_conv_relu()):
            module.fuse_conv_relu(False)
            _trial(
                f"{pairs} convolution + ReLU pair(s) fused",
                module,
                x,
                reference,
                None,
                module.fuse_conv_relu,
                lambda: module.fuse_conv_relu(False),
            )
    return dataclasses.replace(artifact, channels_last=channels_last) if channels_last else artifact
