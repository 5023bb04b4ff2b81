"""A TorchServe custom handler in its plainest form: a module-level ``handle(data, context)``.

Packed into a ``.mar`` by tests/serving/test_torchserve_compat.py with ``torch-model-archiver --handler``
and a TorchScript ``--serialized-file``. TorchServe calls ``handle(None, context)`` once at load time, then
``handle(batch, context)`` with a list of ``{"body": ...}`` dicts. Every answer reports what the handler saw
(context properties, manifest, headers, the body's Python type, the batch's length), so the tests can
compare our server's context with TorchServe's.
"""

import os

import torch

_state = {}


def _initialize(context):
    properties = context.system_properties
    serialized = context.manifest["model"]["serializedFile"]
    path = os.path.join(properties["model_dir"], serialized)
    _state["model"] = torch.jit.load(path, map_location="cpu").eval()
    _state["initialized_with"] = sorted(k for k in ("model_dir", "gpu_id", "batch_size") if k in properties)


def handle(data, context):
    if data is None:  # TorchServe's load-time call
        _initialize(context)
        return None
    properties = context.system_properties
    manifest = context.manifest["model"]
    weights = os.path.join(properties["model_dir"], manifest["serializedFile"])
    outputs = []
    for idx, row in enumerate(data):
        body = row.get("data")
        if body is None:
            body = row.get("body")
        y = None
        if isinstance(body, dict) and "x" in body:
            with torch.inference_mode():
                y = _state["model"](torch.tensor([body["x"]], dtype=torch.float32))[0].tolist()
        if context.get_request_header(idx, "x-format") == "csv":
            context.set_response_content_type(idx, "text/csv")
            outputs.append(",".join(f"{v:.5f}" for v in y) + "\n")
            continue
        outputs.append(
            {
                "y": y,
                "tag": body.get("tag") if isinstance(body, dict) else None,
                "body_type": type(body).__name__,
                "body_length": len(body) if isinstance(body, (bytes, bytearray, str)) else None,
                "text": body if isinstance(body, str) else None,
                "batch": len(data),
                "model_name": context.model_name,
                "manifest_model_name": manifest["modelName"],
                "manifest_version": manifest.get("modelVersion"),
                "manifest_handler": manifest["handler"],
                "batch_size": properties["batch_size"],
                "gpu_id": properties["gpu_id"],
                "model_dir_holds_weights": os.path.isfile(weights),
                "model_dir_holds_manifest": os.path.isfile(
                    os.path.join(properties["model_dir"], "MAR-INF", "MANIFEST.json")
                ),
                "initialized_with": _state["initialized_with"],
                "header": context.get_request_header(idx, "x-test"),
                "header_capitalized": context.get_request_header(idx, "X-Test"),
            }
        )
    return outputs
