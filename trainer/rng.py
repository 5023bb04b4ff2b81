"""Every random number generator a training step touches (Python, NumPy, torch CPU and CUDA), saved and restored
together: exact resume needs the dropout masks after a restart to be the ones the uninterrupted run drew."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from trainer.distributed import Runtime


def rng_state() -> dict[str, Any]:
    """This process's generators, as tensors and plain values that ``torch.load(weights_only=True)`` reads back."""
    numpy_state = np.random.get_state()  # the legacy tuple form, the default
    if not isinstance(numpy_state, tuple):
        raise TypeError(f"np.random.get_state() returned {type(numpy_state).__name__}, expected its tuple form")
    _, keys, pos, has_gauss, cached = numpy_state
    state = {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Put back what :func:`rng_state` returned."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RankRngs:
    """The generators of every rank, as one part of the training state (:class:`trainer.state.TrainState`).

    ``state_dict`` gathers each rank's :func:`rng_state` (a collective under DDP: every rank calls it); a list
    with one entry a rank. ``load_state_dict`` puts back this rank's entry."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def state_dict(self) -> list[dict[str, Any]]:
        if not self.runtime.distributed:
            return [rng_state()]
        states: list[Any] = [None] * self.runtime.world_size
        torch.distributed.all_gather_object(states, rng_state())
        return states

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        set_rng_state(states[self.runtime.rank])
