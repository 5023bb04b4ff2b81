"""The three small steps of an inference: decode the request, run the model, encode the response.

Each is a plain function of its inputs so it can be tested without a server; errors that are the
client's fault raise :class:`InvalidInput` and become 400s.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch

from serving.artifact import Artifact


class InvalidInput(ValueError):
    """The request body is not what the model takes; the message says what was expected."""


MAX_JSON_DEPTH = 32
"""Deeper nesting than any tensor we serve needs; refused before numpy sees it."""


def _depth(value: Any, limit: int) -> int:
    # Iterative, so a hostile 100k-deep list cannot overflow the stack.
    depth, level = 0, [value]
    while level:
        depth += 1
        if depth > limit:
            return depth
        level = [item for v in level if isinstance(v, (list, dict)) for item in
                 (v.values() if isinstance(v, dict) else v)]
    return depth


def decode_json(body: bytes, artifact: Artifact) -> np.ndarray:
    """``{"instances": [...]}`` or a bare list: one instance or a batch, pixels in [0, 255]."""
    if not body:
        raise InvalidInput("empty body: send a JSON array of pixel values or {\"instances\": [...]}")
    try:
        payload = json.loads(body, parse_constant=_reject_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"body is not valid JSON ({exc})") from None
    except RecursionError:  # the C decoder recurses per nesting level
        raise InvalidInput(f"JSON is nested deeper than {MAX_JSON_DEPTH} levels") from None
    if _depth(payload, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise InvalidInput(f"JSON is nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(payload, dict):
        if "instances" not in payload:
            raise InvalidInput("JSON object must have an 'instances' field holding a list of inputs")
        payload = payload["instances"]
    return to_batch(payload, artifact)


def _reject_constant(name: str) -> float:
    raise InvalidInput(f"{name} is not a valid pixel value: send finite numbers")


def to_batch(payload: Any, artifact: Artifact) -> np.ndarray:
    """Validate dtype, rank, shape and range and return a float32 batch of shape (N, *input_shape)."""
    shape = artifact.input_shape
    expected = f"shape {list(shape)} (or {list(shape[1:])} for one channel), or a batch of those"
    try:
        array = np.asarray(payload, dtype=np.float64)
    except (ValueError, TypeError):
        raise InvalidInput(f"input must be a rectangular array of numbers of {expected}") from None
    if array.size == 0:
        raise InvalidInput(f"input is empty: expected {expected}")
    if not np.isfinite(array).all():
        raise InvalidInput("input holds NaN or Infinity: send finite pixel values in [0, 255]")
    if array.shape == shape:
        array = array[None]  # one instance
    elif shape[0] == 1 and array.shape == shape[1:]:
        array = array[None, None]  # one single-channel instance given without its channel axis
    elif shape[0] == 1 and array.ndim == len(shape) and array.shape[1:] == shape[1:]:
        array = array[:, None]  # a batch of those
    if array.ndim != len(shape) + 1 or array.shape[1:] != shape:
        raise InvalidInput(f"input has shape {list(array.shape)}: expected {expected}")
    if len(array) > artifact.max_batch_size:
        raise InvalidInput(f"batch of {len(array)} is larger than the model's limit of {artifact.max_batch_size}")
    low, high = (float(v) for v in artifact.manifest.get("preprocessing", {}).get("pixel_range", (0, 255)))
    if array.min() < low or array.max() > high:
        raise InvalidInput(f"pixel values must lie in [{low:g}, {high:g}], got [{array.min():g}, {array.max():g}]")
    return array.astype(np.float32)


@torch.inference_mode()
def predict(artifact: Artifact, batch: np.ndarray) -> np.ndarray:
    """Logits for a validated batch. Runs on a worker thread, never on the event loop."""
    return artifact.module(torch.from_numpy(batch)).numpy()


def encode_response(artifact: Artifact, logits: np.ndarray) -> dict[str, Any]:
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    labels = artifact.labels
    predictions = []
    for row in probs:
        index = int(row.argmax())
        predictions.append({
            "label": labels[index],
            "index": index,
            "probabilities": [round(float(p), 6) if math.isfinite(p) else 0.0 for p in row],
        })
    return {"predictions": predictions}
