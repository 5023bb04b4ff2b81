"""The OpenAPI 3.1 document served at ``GET /openapi.json``, built from the models actually loaded."""

from __future__ import annotations

from typing import Any

from serving.codec import JPEG, JSON, NPY, PNG

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
    "properties": {
        "predictions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["label", "index", "probabilities"],
                "properties": {
                    "label": {"type": "string"},
                    "index": {"type": "integer", "minimum": 0},
                    "probabilities": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}},
                },
            },
        }
    },
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _inference(summary: str, parameters: list[dict], image_input: bool) -> dict[str, Any]:
    instance = {
        "description": "One instance of the model's input shape, or a batch of them.",
        "type": "array",
        "items": {},
    }
    content: dict[str, Any] = {
        JSON: {
            "schema": {
                "oneOf": [
                    {"type": "object", "required": ["instances"], "properties": {"instances": instance}},
                    instance,
                ]
            }
        },
        NPY: {"schema": {"type": "string", "format": "binary", "description": "An array written by numpy.save."}},
    }
    if image_input:
        for media in (PNG, JPEG):
            content[media] = {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "One image of exactly the model's size.",
                }
            }
    responses = {
        "200": {
            "description": "Predictions: JSON, or the probabilities as .npy when Accept asks for it.",
            "headers": {"X-Request-Id": {"schema": {"type": "string"}}},
            "content": {
                JSON: {"schema": {"$ref": "#/components/schemas/Predictions"}},
                NPY: {"schema": {"type": "string", "format": "binary"}},
            },
        },
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
    return {
        "summary": summary,
        "parameters": parameters,
        "requestBody": {"required": True, "content": content},
        "responses": responses,
    }


# ------------------------------------------------------------------------------- the Open Inference Protocol
# Schemas from kserve/open-inference-protocol inference_rest.md, as permissive as serving/oip.py is (so a
# body the schema refuses is one the server refuses), and its errors' {"error": ...} body.

_OIP_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_TENSOR_META = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
    },
}
_INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype"],
                "properties": {
                    "name": {"type": "string", "enum": ["input"]},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "datatype": {
                        "type": "string",
                        "enum": [
                            "UINT8",
                            "UINT16",
                            "UINT32",
                            "UINT64",
                            "INT8",
                            "INT16",
                            "INT32",
                            "INT64",
                            "FP16",
                            "FP32",
                            "FP64",
                        ],
                    },
                    "parameters": {"type": "object"},
                    "data": {"type": "array"},
                },
            },
        },
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "enum": ["probabilities", "index", "label"]},
                    "parameters": {"type": "object"},
                },
            },
        },
    },
}
_INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "datatype", "shape"],
                "properties": {
                    "name": {"type": "string"},
                    "datatype": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer"}},
                    "parameters": {"type": "object"},
                    "data": {"type": "array"},
                },
            },
        },
    },
}


def _oip_error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": {"$ref": "#/components/schemas/OipError"}}}}


def _oip_get(summary: str, schema: dict[str, Any], parameters: list[dict], false_status: str | None) -> dict:
    responses: dict[str, Any] = {"200": {"description": "Yes.", "content": {JSON: {"schema": schema}}}}
    if parameters:
        responses["404"] = _oip_error("No model (or version) of that name is loaded.")
        responses["400"] = _oip_error("The model is not one the protocol serves (a handler model).")
    if false_status:
        responses[false_status] = {"description": "No.", "content": {JSON: {"schema": schema}}}
    return {"get": {"summary": summary, "parameters": parameters, "responses": responses}}


_MODEL_READY = {
    "type": "object",
    "required": ["name", "ready"],
    "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
}
_MODEL_METADATA = {
    "type": "object",
    "required": ["name", "platform", "inputs", "outputs"],
    "properties": {
        "name": {"type": "string"},
        "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": {"type": "array", "items": _TENSOR_META},
        "outputs": {"type": "array", "items": _TENSOR_META},
    },
}
_INFER = {
    "summary": "Open Inference Protocol inference (JSON tensors; binary ones after the JSON with "
    "Inference-Header-Content-Length).",
    "requestBody": {
        "required": True,
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/InferenceRequest"}}},
    },
    "responses": {
        "200": {
            "description": "The outputs.",
            "headers": {"X-Request-Id": {"schema": {"type": "string"}}},
            "content": {
                JSON: {"schema": {"$ref": "#/components/schemas/InferenceResponse"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        "400": _oip_error("The request is not one the model takes."),
        "404": _oip_error("No model (or version) of that name is loaded."),
        "413": _oip_error("The body is larger than the limit."),
        "415": _oip_error("The Content-Type is not an inference request."),
        "500": _oip_error("The model failed; the message names the request id."),
        "503": _oip_error("Not ready yet, or busy: retry after Retry-After seconds."),
        "504": _oip_error("The request waited longer than the server's inference timeout."),
    },
}
_SERVER_METADATA = {
    "type": "object",
    "required": ["name", "version", "extensions"],
    "properties": {
        "name": {"type": "string"},
        "version": {"type": "string"},
        "extensions": {"type": "array", "items": {"type": "string"}},
    },
}
_LIVE = {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}}
_SERVER_READY = {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}}


def _oip_paths(name_param: dict, version_param: dict) -> dict[str, Any]:
    return {
        "/v2": _oip_get("Open Inference Protocol: the server's metadata.", _SERVER_METADATA, [], None),
        "/v2/health/live": _oip_get("Open Inference Protocol: liveness.", _LIVE, [], None),
        "/v2/health/ready": _oip_get(
            "Open Inference Protocol: readiness (400 while loading).", _SERVER_READY, [], "400"
        ),
        "/v2/models/{model_name}": _oip_get(
            "A model's tensors, from its manifest.", _MODEL_METADATA, [name_param], None
        ),
        "/v2/models/{model_name}/ready": _oip_get("Whether a model is ready.", _MODEL_READY, [name_param], None),
        "/v2/models/{model_name}/versions/{model_version}": _oip_get(
            "One version's tensors.", _MODEL_METADATA, [name_param, version_param], None
        ),
        "/v2/models/{model_name}/versions/{model_version}/ready": _oip_get(
            "Whether one version is ready.", _MODEL_READY, [name_param, version_param], None
        ),
        "/v2/models/{model_name}/infer": {"post": {**_INFER, "parameters": [name_param]}},
        "/v2/models/{model_name}/versions/{model_version}/infer": {
            "post": {**_INFER, "parameters": [name_param, version_param]}
        },
    }


_STATUS = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}
_PING = {
    "get": {
        "summary": "Health: 200 once every model is loaded and warmed up, 503 before.",
        "responses": {
            "200": {"description": "Ready.", "content": {JSON: {"schema": _STATUS}}},
            "503": {"description": "Loading.", "content": {JSON: {"schema": _STATUS}}},
        },
    }
}
_METRICS = {
    "get": {
        "summary": "Prometheus metrics.",
        "responses": {
            "200": {"description": "Text exposition format.", "content": {"text/plain": {"schema": {"type": "string"}}}}
        },
    }
}


def _contract_paths(name_param: dict, version_param: dict, image_input: bool) -> dict[str, Any]:
    """SageMaker's and TorchServe's inference routes; PUT as well as POST, as TorchServe answers both
    (`curl -T file` sends a PUT)."""
    both = [name_param, version_param]
    return {
        "/invocations": {"post": _inference("SageMaker: predict with the default model.", [], image_input)},
        "/predictions/{model_name}": {
            method: _inference("TorchServe: predict with a model's default version.", [name_param], image_input)
            for method in ("post", "put")
        },
        "/predictions/{model_name}/{model_version}": {
            method: _inference("TorchServe: predict with one version of a model.", both, image_input)
            for method in ("post", "put")
        },
    }


def _path_param(name: str, examples: list[str]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "examples": examples}}


def document(models: dict[str, list[str]], image_input: bool) -> dict[str, Any]:
    """``models``: name -> versions loaded; ``image_input``: any model reads PNG/JPEG."""
    name_param = _path_param("model_name", sorted(models) or ["model"])
    version_param = _path_param("model_version", sorted({v for vs in models.values() for v in vs}) or ["1"])
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "deepcloud inference server",
            "version": "1",
            "description": "SageMaker's hosting contract, TorchServe's inference API and the Open Inference "
            "Protocol (KServe v2).",
        },
        "paths": {
            "/ping": _PING,
            **_contract_paths(name_param, version_param, image_input),
            "/metrics": _METRICS,
            **_oip_paths(name_param, version_param),
        },
        "components": {
            "schemas": {
                "Error": _ERROR,
                "Predictions": _PREDICTIONS,
                "OipError": _OIP_ERROR,
                "InferenceRequest": _INFER_REQUEST,
                "InferenceResponse": _INFER_RESPONSE,
            }
        },
    }
