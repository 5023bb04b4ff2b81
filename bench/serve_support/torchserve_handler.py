"""TorchServe handler for `make bench-serve`: the same artifact, the same work per request as our server.

Packed into a .mar by bench/serve.py with ``torch-model-archiver --handler`` next to the artifact's
``model.pt2`` and ``manifest.json`` and a ``bench_handler.json`` holding ``{"threads": N}``. It imports nothing
from this repository (TorchServe's worker loads it from the extracted archive).

Per batch TorchServe hands it (``batchSize``/``maxBatchDelay`` from the archive's model-config.yaml): each
request's body, which TorchServe's worker has already json-decoded for ``application/json``; the same
checks as our server (``{"instances": [...]}`` or a bare list, shape = ``input.shape`` or a batch of those,
finite values within ``preprocessing.pixel_range``); one forward pass over all requests' instances
under ``torch.inference_mode``; softmax, argmax and per-request JSON ``{"predictions": [{"label", "index",
"probabilities"}]}``. A bad request gets a 400 without failing the others in its batch.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import torch

_state: dict = {}


def _initialize(context) -> None:
    model_dir = context.system_properties["model_dir"]
    with open(os.path.join(model_dir, "bench_handler.json")) as fh:
        torch.set_num_threads(int(json.load(fh)["threads"]))
    with open(os.path.join(model_dir, "manifest.json")) as fh:
        manifest = json.load(fh)
    module = torch.export.load(os.path.join(model_dir, manifest["model"]["file"])).module()
    shape = tuple(manifest["input"]["shape"])
    with torch.inference_mode():
        module(torch.zeros((1, *shape)))  # warm-up, as our server does
    low, high = (float(v) for v in manifest.get("preprocessing", {}).get("pixel_range", (0, 255)))
    _state.update(
        module=module,
        shape=shape,
        labels=manifest["labels"],
        low=low,
        high=high,
        max_batch=int(manifest["model"].get("max_batch_size", 1)),
    )


def _decode(body) -> np.ndarray:
    if isinstance(body, (bytes, bytearray)):
        body = json.loads(body)
    if isinstance(body, dict):
        body = body["instances"]
    shape = _state["shape"]
    array = np.asarray(body, dtype=np.float64)
    if array.shape == shape:
        array = array[None]
    if array.ndim != len(shape) + 1 or array.shape[1:] != shape or not 0 < len(array) <= _state["max_batch"]:
        raise ValueError(f"input has shape {list(array.shape)}: expected {list(shape)} or a batch of those")
    if not np.isfinite(array).all() or array.min() < _state["low"] or array.max() > _state["high"]:
        raise ValueError(f"values must be finite and within [{_state['low']:g}, {_state['high']:g}]")
    return array.astype(np.float32)


def handle(data, context):
    if not _state:
        _initialize(context)
    if data is None:  # TorchServe calls handle(None, context) once to initialise a function entry point
        return None
    batches, errors = [], {}
    for i, request in enumerate(data):
        try:
            batches.append(_decode(request.get("body", request.get("data"))))
        except (ValueError, TypeError, KeyError) as exc:
            errors[i] = str(exc)
            batches.append(None)
    good = [b for b in batches if b is not None]
    probs = None
    if good:
        with torch.inference_mode():
            probs = torch.softmax(_state["module"](torch.from_numpy(np.concatenate(good))), dim=1).numpy()
    out, start, labels = [], 0, _state["labels"]
    for i, batch in enumerate(batches):
        context.set_response_content_type(i, "application/json")
        if batch is None:
            context.set_response_status(400, errors[i], idx=i)
            out.append(json.dumps({"code": "invalid_input", "message": errors[i]}))
            continue
        predictions = []
        for row in probs[start : start + len(batch)]:
            index = int(row.argmax())
            predictions.append(
                {
                    "label": labels[index],
                    "index": index,
                    "probabilities": [round(float(p), 6) if math.isfinite(p) else 0.0 for p in row],
                }
            )
        start += len(batch)
        out.append(json.dumps({"predictions": predictions}))
    return out
