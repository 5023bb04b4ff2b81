"""Helpers for tests against a live server process: a model store, reference answers, plain HTTP calls.

The reference runs the exported program with torch directly, not through serving/, so a test that compares
the server's answers with it checks the whole path: decoding, batching, the forward pass and encoding.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from tests.conftest import http_request as request
from tests.serving.conftest import write_tiny_artifact


def write_store(root: Path, models: Mapping[str, Sequence[str]]) -> Path:
    """A model store ``root/name/version/`` of tiny digits artifacts, each version with its own weights."""
    seed = 0
    for name, versions in models.items():
        for version in versions:
            write_tiny_artifact(root / name / version, seed=seed)
            seed += 1
    return root


def images(n: int, seed: int) -> np.ndarray:
    """``n`` digits-shaped inputs ``(n, 1, 8, 8)`` of whole pixel values in [0, 255]."""
    return np.random.default_rng(seed).integers(0, 256, (n, 1, 8, 8)).astype(np.float32)


def reference_indices(model_dir: Path, batch: np.ndarray) -> list[int]:
    """The predicted class of every instance, from the artifact's exported program run by torch itself."""
    import torch

    module = torch.export.load(model_dir / "model.pt2").module()
    with torch.inference_mode():
        return module(torch.from_numpy(batch)).argmax(dim=1).tolist()


def predict(port: int, path: str, batch: np.ndarray, timeout: float = 30) -> tuple[int, dict]:
    """POST ``batch`` as JSON instances; (status, decoded JSON body)."""
    body = json.dumps({"instances": batch.tolist()}).encode()
    status, _, raw = request(port, "POST", path, body, {"Content-Type": "application/json"}, timeout=timeout)
    return status, json.loads(raw)


def queue_depth(port: int, model: str) -> float:
    """The ``deepcloud_queue_depth`` gauge of ``model`` ("name:version") from /metrics; 0 when absent."""
    _, _, text = request(port, "GET", "/metrics")
    match = re.search(rf'^deepcloud_queue_depth{{model="{re.escape(model)}"}} (\S+)$', text.decode(), re.MULTILINE)
    return float(match.group(1)) if match else 0.0
