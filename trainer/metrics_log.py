"""metrics.jsonl and the ``key=value`` log lines SageMaker's metric regexes read, written as the loop goes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

if TYPE_CHECKING:
    from trainer.tracking import Tracking


EVENTS = frozenset({"resumed", "checkpoint"})
"""Kinds whose echoed line starts with their name: 'resumed path=... step=120', 'checkpoint step=... reason=sigusr1'."""


class MetricsLog:
    """metrics.jsonl (one JSON object a line) and key=value lines a SageMaker metric regex can read; every
    record also goes to ``tracker`` (TensorBoard, MLflow: trainer/tracking.py) with the same values."""

    def __init__(self, path: Path | None, enabled: bool, tracker: Tracking | None = None) -> None:
        self.path, self.enabled, self.tracker = path, enabled, tracker
        if enabled and path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, kind: str, echo: bool = True, bar: tqdm | None = None, **values: Any) -> None:
        if not self.enabled:
            return
        if self.path is not None:
            with self.path.open("a") as fh:
                fh.write(json.dumps({"type": kind, "time": round(time.time(), 3), **values}) + "\n")
        if self.tracker is not None:
            self.tracker.record(kind, values)
        if echo:
            line = " ".join(f"{k}={_fmt(v)}" for k, v in values.items())
            if kind in EVENTS:  # a metric line is key=value only (SageMaker's regexes); an event says what it is
                line = f"{kind} {line}"
            if bar is not None and not bar.disable:
                bar.write(line)
            else:
                print(line, flush=True)


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
