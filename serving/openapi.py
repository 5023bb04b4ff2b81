"""The OpenAPI 3.1 document served at ``GET /openapi.json``, built from the models actually loaded."""

from __future__ import annotations

from typing import Any

from serving.predictor import JPEG, JSON, NPY, PNG

_ERROR = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string", "description": "Stable machine-readable error code."},
        "message": {"type": "string", "description": "What was wrong and what to send instead."},
        "request_id": {"type": "string"},
    },
}
_PREDICTIONS = {
    "type": "object",
    "required": ["predictions"],
    "properties": {"predictions": {"type": "array", "items": {
        "type": "object",
        "required": ["label", "index", "probabilities"],
        "properties": {
            "label": {"type": "string"},
            "index": {"type": "integer", "minimum": 0},
            "probabilities": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}},
        },
    }}},
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _inference(summary: str, parameters: list[dict], image_input: bool) -> dict[str, Any]:
    instance = {"description": "One instance of the model's input shape, or a batch of them.",
                "type": "array", "items": {}}
    content: dict[str, Any] = {
        JSON: {"schema": {"oneOf": [
            {"type": "object", "required": ["instances"], "properties": {"instances": instance}},
            instance,
        ]}},
        NPY: {"schema": {"type": "string", "format": "binary", "description": "An array written by numpy.save."}},
    }
    if image_input:
        for media in (PNG, JPEG):
            content[media] = {"schema": {"type": "string", "format": "binary",
                                         "description": "One image of exactly the model's size."}}
    responses = {
        "200": {"description": "Predictions: JSON, or the probabilities as .npy when Accept asks for it.",
                "headers": {"X-Request-Id": {"schema": {"type": "string"}}},
                "content": {JSON: {"schema": {"$ref": "#/components/schemas/Predictions"}},
                            NPY: {"schema": {"type": "string", "format": "binary"}}}},
        "400": _error("The input is not what the model takes: malformed, wrong dtype, rank, shape or range."),
        "406": _error("Accept names no type the server writes."),
        "413": _error("The body is larger than the limit (6 MB by default, SageMaker's cap)."),
        "415": _error("The Content-Type is not one the model reads."),
        "500": _error("The model failed; the message carries the request id to find in the server log."),
        "503": _error("Not ready yet, or the model's queue is full: retry after Retry-After seconds."),
        "504": _error("The request waited longer than the server's inference timeout."),
    }
    if parameters:
        responses["404"] = _error("No model (or version) of that name is loaded.")
    return {"summary": summary, "parameters": parameters,
            "requestBody": {"required": True, "content": content}, "responses": responses}


def document(models: dict[str, list[str]], image_input: bool) -> dict[str, Any]:
    """``models``: name -> versions loaded; ``image_input``: any model reads PNG/JPEG."""
    names = sorted(models) or ["model"]
    versions = sorted({v for vs in models.values() for v in vs}) or ["1"]
    name_param = {"name": "model_name", "in": "path", "required": True,
                  "schema": {"type": "string", "examples": names}}
    version_param = {"name": "model_version", "in": "path", "required": True,
                     "schema": {"type": "string", "examples": versions}}
    status = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "deepcloud inference server", "version": "1",
                 "description": "SageMaker's hosting contract and TorchServe's inference API."},
        "paths": {
            "/ping": {"get": {"summary": "Health: 200 once every model is loaded and warmed up, 503 before.",
                              "responses": {"200": {"description": "Ready.", "content": {JSON: {"schema": status}}},
                                            "503": {"description": "Loading.",
                                                    "content": {JSON: {"schema": status}}}}}},
            "/invocations": {"post": _inference("SageMaker: predict with the default model.", [], image_input)},
            # PUT as well as POST, as TorchServe answers both (`curl -T file` sends a PUT).
            "/predictions/{model_name}": {method: _inference(
                "TorchServe: predict with a model's default version.", [name_param], image_input)
                for method in ("post", "put")},
            "/predictions/{model_name}/{model_version}": {method: _inference(
                "TorchServe: predict with one version of a model.", [name_param, version_param], image_input)
                for method in ("post", "put")},
            "/metrics": {"get": {"summary": "Prometheus metrics.", "responses": {"200": {
                "description": "Text exposition format.",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        },
        "components": {"schemas": {"Error": _ERROR, "Predictions": _PREDICTIONS}},
    }
