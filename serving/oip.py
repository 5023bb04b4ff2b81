"""The Open Inference Protocol (KServe v2, what Triton, KServe, MLServer and Seldon speak) over REST, with
Triton's binary tensor extension, for this project's ``torch.export`` artifacts.

Sources: kserve/open-inference-protocol ``specification/protocol/inference_rest.md`` (routes, JSON objects,
``{"error": ...}`` bodies, datatypes, row-major ``data``), Triton's ``docs/protocol/extension_binary_data.md``
(``Inference-Header-Content-Length``, ``binary_data_size``, ``binary_data`` / ``binary_data_output``, BYTES as
4-byte little-endian lengths), and the ``tritonclient`` 2.73 HTTP client that tests/serving/test_oip.py runs
unchanged (what it sends and how it reads answers). Triton's SageMaker mode carries the JSON size in the
content type, since SageMaker forwards no custom header: ``application/vnd.sagemaker-triton.binary+json;
json-header-size=N`` on ``/invocations``.

A model has one input, ``input`` (the manifest's ``input.shape`` with -1 for the batch), taken in any numeric
datatype and validated like every other route's input; and three outputs: ``probabilities`` (FP32,
``[-1, classes]``), ``index`` (INT64, ``[-1]``) and ``label`` (BYTES, ``[-1]``). Requests from every route
batch together: the decoded input is the same float32 batch the SageMaker and TorchServe routes submit.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from serving import codec
from serving.errors import InvalidInput, UnsupportedMediaType

if TYPE_CHECKING:
    from serving.artifact import Artifact

INPUT = "input"
OUTPUTS = ("probabilities", "index", "label")
EXTENSIONS = ("binary_tensor_data",)
HEADER_LENGTH = "inference-header-content-length"
SAGEMAKER_TRITON = "application/vnd.sagemaker-triton.binary+json"
"""Triton's SageMaker content type: the JSON header's size is its ``json-header-size`` parameter."""

DATATYPES: dict[str, np.dtype] = {
    name: np.dtype(dtype).newbyteorder("<")
    for name, dtype in {
        "BOOL": np.bool_,
        "UINT8": np.uint8,
        "UINT16": np.uint16,
        "UINT32": np.uint32,
        "UINT64": np.uint64,
        "INT8": np.int8,
        "INT16": np.int16,
        "INT32": np.int32,
        "INT64": np.int64,
        "FP16": np.float16,
        "FP32": np.float32,
        "FP64": np.float64,
    }.items()
}
"""The spec's numeric datatypes, little-endian as the binary extension lays them out (BYTES and BF16 apart)."""


@dataclass(frozen=True, slots=True)
class InferRequest:
    """A decoded ``/infer`` request: the batch for the batcher, and what the answer must hold."""

    batch: np.ndarray
    id: str | None
    outputs: tuple[tuple[str, bool], ...]
    """(output name, as binary data) in the order asked, or every output when none was named."""
    sagemaker: bool = False
    """Asked through /invocations in Triton's SageMaker mode: the JSON size goes in the content type."""


def header_length(media_type: str, content_type: str, headers: Mapping[str, str]) -> int | None:
    """The size of the JSON header in front of binary tensors, or None for a body that is all JSON."""
    if media_type == SAGEMAKER_TRITON:
        for part in content_type.split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "json-header-size":
                return _size(value, "json-header-size")
        raise InvalidInput(f"{SAGEMAKER_TRITON} needs ;json-header-size=<bytes of JSON> in the content type")
    declared = headers.get(HEADER_LENGTH)
    return None if declared is None else _size(declared, "Inference-Header-Content-Length")


def _size(text: str, what: str) -> int:
    if not text.strip().isdigit():
        raise InvalidInput(f"{what} {text!r} is not a byte count")
    return int(text)


def decode(
    body: bytes, media_type: str, content_type: str, headers: Mapping[str, str], artifact: Artifact
) -> InferRequest:
    if media_type not in ("application/json", "application/octet-stream", SAGEMAKER_TRITON, ""):
        raise UnsupportedMediaType(
            f"content type {media_type!r} is not an inference request: send "
            "application/json (binary tensors after it with Inference-Header-Content-Length)"
        )
    size = header_length(media_type, content_type, headers)
    if size is not None and size > len(body):
        raise InvalidInput(f"the JSON header is said to be {size} bytes but the body has {len(body)}")
    try:
        request = orjson.loads(body if size is None else body[:size])
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the inference request is not valid JSON ({exc})") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise InvalidInput('the inference request must be a JSON object with "inputs": [...]')
    inputs = request["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0], dict) or inputs[0].get("name") != INPUT:
        raise InvalidInput(
            f"this model takes one input named {INPUT!r}, got "
            f"{[i.get('name') if isinstance(i, dict) else i for i in inputs]!r}"
        )
    array = _tensor(inputs[0], memoryview(body)[size:] if size is not None else None)
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput('"id" must be a string')
    parameters = _parameters(request, "the request")
    return InferRequest(
        codec.to_batch(array, artifact),
        request_id,
        _outputs(request.get("outputs"), bool(parameters.get("binary_data_output"))),
        sagemaker=media_type == SAGEMAKER_TRITON,
    )


def _parameters(holder: dict[str, Any], what: str) -> dict[str, Any]:
    """The "parameters" object of a request, input or output: absent is empty; anything but an object is refused."""
    parameters = holder.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InvalidInput(f'{what}: "parameters" must be an object')
    return parameters


def _tensor(spec: dict[str, Any], binary: memoryview | None) -> np.ndarray:
    shape, datatype = spec.get("shape"), spec.get("datatype")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidInput(f'input {INPUT!r}: "shape" must be a list of non-negative integers, got {shape!r}')
    dtype = DATATYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None or datatype == "BOOL":
        raise InvalidInput(
            f"input {INPUT!r}: datatype {datatype!r} is not a number type this model takes: send "
            "FP32, FP16, FP64, or an INT or UINT type"
        )
    count = math.prod(shape)  # Python ints: a huge shape cannot wrap around to a small count
    binary_size = _parameters(spec, f"input {INPUT!r}").get("binary_data_size")
    if binary_size is not None:
        if binary is None:
            raise InvalidInput(
                f"input {INPUT!r} has binary_data_size but the request has no Inference-Header-Content-Length"
            )
        if not isinstance(binary_size, int) or binary_size != count * dtype.itemsize or binary_size > len(binary):
            raise InvalidInput(
                f"input {INPUT!r}: binary_data_size {binary_size!r} does not match shape {shape} of "
                f"{datatype} ({count * dtype.itemsize} bytes, {len(binary)} sent)"
            )
        return np.frombuffer(binary[:binary_size], dtype=dtype).reshape(shape)
    data = spec.get("data")
    if data is None:
        raise InvalidInput(f'input {INPUT!r} has no "data" and no binary_data_size')
    try:
        flat = np.asarray(data)
    except (ValueError, TypeError):
        raise InvalidInput(f'input {INPUT!r}: "data" must be numbers, flat or nested in row-major order') from None
    if flat.dtype.kind not in "iuf":
        raise InvalidInput(f'input {INPUT!r}: "data" must be numbers, not {flat.dtype.kind!r} values')
    if flat.size != count:
        raise InvalidInput(f'input {INPUT!r}: "data" has {flat.size} values but shape {shape} needs {count}')
    return flat.reshape(shape)


def _outputs(requested: Any, binary_default: bool) -> tuple[tuple[str, bool], ...]:
    if requested is None:
        return tuple((name, binary_default) for name in OUTPUTS)
    if not isinstance(requested, list):
        raise InvalidInput('"outputs" must be a list of {"name": ...}')
    chosen = []
    for output in requested:
        name = output.get("name") if isinstance(output, dict) else None
        if name not in OUTPUTS:
            raise InvalidInput(f"output {name!r} is not one of this model's: {', '.join(OUTPUTS)}")
        parameters = _parameters(output, f"output {name!r}")
        if parameters.get("classification"):
            raise InvalidInput("the classification extension is not supported: ask for 'probabilities' and 'label'")
        chosen.append((name, bool(parameters.get("binary_data", binary_default))))
    return tuple(chosen)


def encode(
    request: InferRequest, prediction: codec.Prediction, artifact: Artifact, model: str, version: str
) -> tuple[bytes, dict[str, str], str]:
    """(body, headers, media type) of the answer: JSON, with binary tensors after it where asked."""
    labels = [artifact.labels[i] for i in prediction.index.tolist()]
    outputs, binaries = [], []
    for name, binary in request.outputs:
        if name == "probabilities":  # the float32 values themselves, in JSON too (the other routes round them)
            spec: dict[str, Any] = {"datatype": "FP32", "shape": list(prediction.probs.shape)}
            data: Any = (
                np.ascontiguousarray(prediction.probs, dtype="<f4").tobytes()
                if binary
                else prediction.probs.ravel().tolist()
            )
        elif name == "index":
            spec = {"datatype": "INT64", "shape": [len(labels)]}
            data = (
                np.ascontiguousarray(prediction.index, dtype="<i8").tobytes() if binary else prediction.index.tolist()
            )
        else:
            spec = {"datatype": "BYTES", "shape": [len(labels)]}
            data = b"".join(struct.pack("<I", len(b)) + b for b in (s.encode() for s in labels)) if binary else labels
        if binary:
            binaries.append(data)
            outputs.append({"name": name, **spec, "parameters": {"binary_data_size": len(data)}})
        else:
            outputs.append({"name": name, **spec, "data": data})
    answer: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": outputs}
    if request.id is not None:
        answer["id"] = request.id
    header = orjson.dumps(answer)
    if not binaries:
        return header, {}, "application/json"
    media_type = (
        f"{SAGEMAKER_TRITON};json-header-size={len(header)}" if request.sagemaker else "application/octet-stream"
    )
    return header + b"".join(binaries), {"Inference-Header-Content-Length": str(len(header))}, media_type


def metadata(name: str, versions: list[str], artifact: Artifact) -> dict[str, Any]:
    classes = len(artifact.labels)
    return {
        "name": name,
        "versions": versions,
        "platform": "pytorch_torchexport",
        "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, *artifact.input_shape]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]},
            {"name": "index", "datatype": "INT64", "shape": [-1]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ],
    }
