"""SageMaker PyTorch ``code/inference.py`` for `make bench-serve`: the bench's artifact, as such a script serves it.

bench/serve.py copies it to ``<artifact>/code/inference.py`` beside ``model.pt2`` and ``bench_model.json``
(labels, input shape, pixel range), with no ``manifest.json``: our server then runs it the way SageMaker's
PyTorch inference toolkit does, one request per call of ``input_fn`` -> ``predict_fn`` -> ``output_fn``,
and bench/serve_support/bare_kinds.py calls the same three functions from a bare Starlette endpoint. It
imports nothing from this repository and does what the TorchServe handler does per request: the same checks,
softmax, argmax and JSON.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import torch


def model_fn(model_dir: str) -> dict:
    with open(os.path.join(model_dir, "bench_model.json")) as fh:
        spec = json.load(fh)
    module = torch.export.load(os.path.join(model_dir, "model.pt2")).module()
    shape = tuple(spec["shape"])
    with torch.inference_mode():
        module(torch.zeros((1, *shape)))  # warm-up, as the other servers do
    low, high = spec["pixel_range"]
    return {"module": module, "shape": shape, "labels": spec["labels"], "low": float(low), "high": float(high)}


def input_fn(body, content_type: str) -> np.ndarray:
    if content_type != "application/json":
        raise ValueError(f"content type {content_type!r}: send application/json")
    payload = json.loads(body)
    if isinstance(payload, dict):
        payload = payload["instances"]
    return np.asarray(payload, dtype=np.float64)


def predict_fn(data: np.ndarray, model: dict) -> tuple[np.ndarray, list[str]]:
    shape = model["shape"]
    if data.shape == shape:
        data = data[None]
    if data.ndim != len(shape) + 1 or data.shape[1:] != shape:
        raise ValueError(f"input has shape {list(data.shape)}: expected {list(shape)} or a batch of those")
    if not np.isfinite(data).all() or data.min() < model["low"] or data.max() > model["high"]:
        raise ValueError(f"values must be finite and within [{model['low']:g}, {model['high']:g}]")
    with torch.inference_mode():
        probs = torch.softmax(model["module"](torch.from_numpy(data.astype(np.float32))), dim=1).numpy()
    return probs, model["labels"]


def output_fn(prediction: tuple[np.ndarray, list[str]], accept: str) -> tuple[str, str]:
    probs, labels = prediction
    predictions = []
    for row in probs:
        index = int(row.argmax())
        predictions.append(
            {
                "label": labels[index],
                "index": index,
                "probabilities": [round(float(p), 6) if math.isfinite(p) else 0.0 for p in row],
            }
        )
    return json.dumps({"predictions": predictions}), "application/json"
