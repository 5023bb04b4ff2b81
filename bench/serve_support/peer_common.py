"""What every peer app of `make bench-serve` shares: the artifact, the checks and the JSON of torchserve_handler.py.

Each peer app (bench/serve_support/peer_*.py) runs in the peer's own virtual environment, where this repository
is not installed: it imports this file by path (it sits next to it) and nothing else from the repository. Like
the TorchServe handler: ``torch.export.load`` of the artifact's ``model.pt2``, the given torch thread count, a
warm-up forward; per request the same checks as our server (``{"instances": [...]}`` or a bare list, shape =
``input.shape`` or a batch of those, finite values within ``preprocessing.pixel_range``); one forward pass over
all requests' instances under ``torch.inference_mode``; softmax, argmax, and per request ``{"label", "index",
"probabilities"}`` (rounded to 6 digits).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
import torch


class Model:
    def __init__(self, model_dir: str, threads: int) -> None:
        torch.set_num_threads(threads)
        with open(os.path.join(model_dir, "manifest.json")) as fh:
            manifest = json.load(fh)
        self.module = torch.export.load(os.path.join(model_dir, manifest["model"]["file"])).module()
        self.shape = tuple(manifest["input"]["shape"])
        self.labels = manifest["labels"]
        self.low, self.high = (float(v) for v in manifest.get("preprocessing", {}).get("pixel_range", (0, 255)))
        self.max_batch = int(manifest["model"].get("max_batch_size", 1))
        with torch.inference_mode():
            self.module(torch.zeros((1, *self.shape)))  # warm-up, as our server does

    def decode(self, body: Any) -> np.ndarray:
        """A request body (bytes, or already decoded JSON) as a float32 batch; ValueError when it is not one."""
        if isinstance(body, (bytes, bytearray, str)):
            body = json.loads(body)
        if isinstance(body, dict):
            body = body["instances"]
        return self.check(np.asarray(body, dtype=np.float64))

    def check(self, array: np.ndarray) -> np.ndarray:
        shape = self.shape
        if array.shape == shape:
            array = array[None]
        if array.ndim != len(shape) + 1 or array.shape[1:] != shape or not 0 < len(array) <= self.max_batch:
            raise ValueError(f"input has shape {list(array.shape)}: expected {list(shape)} or a batch of those")
        if not np.isfinite(array).all() or array.min() < self.low or array.max() > self.high:
            raise ValueError(f"values must be finite and within [{self.low:g}, {self.high:g}]")
        return array.astype(np.float32)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """softmax of one forward pass over ``batch`` (float32, the input shape plus a batch dimension)."""
        with torch.inference_mode():
            return torch.softmax(self.module(torch.from_numpy(batch)), dim=1).numpy()

    def predictions(self, probs: np.ndarray) -> list[dict[str, Any]]:
        out = []
        for row in probs:
            index = int(row.argmax())
            out.append(
                {
                    "label": self.labels[index],
                    "index": index,
                    "probabilities": [round(float(p), 6) if math.isfinite(p) else 0.0 for p in row],
                }
            )
        return out

    def predict_many(self, batches: list[np.ndarray]) -> list[list[dict[str, Any]]]:
        """One forward pass over every request's instances; each request's predictions."""
        probs = self.probabilities(np.concatenate(batches)) if len(batches) > 1 else self.probabilities(batches[0])
        out, start = [], 0
        for batch in batches:
            out.append(self.predictions(probs[start : start + len(batch)]))
            start += len(batch)
        return out
