"""Serve a SageMaker PyTorch model artifact unchanged: ``code/inference.py`` with ``model_fn`` and friends.

The functions and their defaults follow the SageMaker PyTorch inference toolkit
(``sagemaker_pytorch_serving_container.default_pytorch_inference_handler``):

- ``model_fn(model_dir)``: required unless ``model.pt`` (TorchScript) is in the model directory, which the
  default loads with ``torch.jit.load``;
- ``input_fn(input_data, content_type)``: default reads ``application/json``, ``text/csv`` and
  ``application/x-npy`` into a float tensor on the model's device (JSON and CSV bodies arrive as str, others
  as bytes, as the toolkit passes them); ``.npy`` is read without pickle;
- ``predict_fn(data, model)``: default ``model(data)`` under ``torch.no_grad()``;
- ``output_fn(prediction, accept)``: default encodes tensors/arrays as JSON, CSV or ``.npy``, whichever the
  Accept header names first (JSON when it names none in particular);
- ``transform_fn(model, input_data, content_type, accept)`` replaces the three above when defined.

``output_fn`` and ``transform_fn`` may return the body, or ``(body, content_type)``. ``code/requirements.txt``
is reported and never installed at run time. Errors are mapped by where they happen: ``input_fn`` → 400
with its message (an unsupported content type in the default → 415); ``model_fn``, ``predict_fn``,
``output_fn``, ``transform_fn`` → 500 with a request id, and the server keeps serving.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serving.errors import ClientError, InvalidInput, NotAcceptable, UnsupportedMediaType
from serving.runner import Reply, Request, Runner
from serving.usercode import import_model_file

log = logging.getLogger("serving")

JSON, CSV, NPY = "application/json", "text/csv", "application/x-npy"
UTF8_TYPES = (JSON, CSV)
DEFAULT_MODEL_FILE = "model.pt"


class InputFnError(InvalidInput):
    """An exception in ``input_fn``: the client's request is not what the script reads."""


# ------------------------------------------------------------------------------------------------- defaults


def default_model_fn(model_dir: str):
    import torch

    path = Path(model_dir) / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no model_fn in inference.py and no {DEFAULT_MODEL_FILE} in {model_dir} for the "
            "default model_fn: define model_fn(model_dir)"
        )
    return torch.jit.load(path, map_location="cpu").eval()


def decode_array(input_data: Any, content_type: str) -> np.ndarray:
    if content_type == JSON:
        try:
            return np.array(json.loads(input_data), dtype=np.float32)
        except (ValueError, TypeError, RecursionError) as exc:
            raise InvalidInput(f"body is not a JSON array of numbers ({exc})") from None
    if content_type == CSV:
        try:
            rows = [[float(v) for v in row] for row in csv.reader(io.StringIO(input_data)) if row]
            return np.array(rows, dtype=np.float32)
        except ValueError as exc:
            raise InvalidInput(f"body is not CSV of numbers ({exc})") from None
    if content_type == NPY:
        try:
            return np.load(io.BytesIO(input_data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InvalidInput(f"body is not a readable .npy array ({exc})") from None
    raise UnsupportedMediaType(
        f"content type {content_type or '(none)'!r} is not supported by the default input_fn: "
        f"send {JSON}, {CSV} or {NPY}, or define input_fn in inference.py"
    )


def encode_array(value: Any, content_type: str) -> bytes:
    import torch

    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if content_type == JSON:
        return json.dumps(value.tolist() if isinstance(value, np.ndarray) else value).encode()
    array = np.asarray(value)
    if content_type == NPY:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        return buffer.getvalue()
    text = io.StringIO()
    csv.writer(text).writerows(array.reshape(len(array), -1).tolist() if array.ndim else [[array.item()]])
    return text.getvalue().encode()


def parse_accept(accept: str | None) -> list[str]:
    if not accept or accept.strip() in ("*/*", ""):
        return [JSON]
    return [part.split(";")[0].strip().lower() for part in accept.split(",")]


# ------------------------------------------------------------------------------------------------ the runner


class InferenceScriptRunner(Runner):
    kind = "sagemaker-inference-script"

    def __init__(self, module: Any, model: Any, device: str, description: dict[str, Any]) -> None:
        self.module, self.model, self.device = module, model, device
        self._description = description
        self._transform = getattr(module, "transform_fn", None)
        self._input = getattr(module, "input_fn", None) or self._default_input
        self._predict = getattr(module, "predict_fn", None) or self._default_predict
        self._output = getattr(module, "output_fn", None) or self._default_output

    def _default_input(self, input_data: Any, content_type: str):
        import torch

        array = decode_array(input_data, content_type)
        if array.dtype.kind not in "biuf":
            raise InvalidInput(f"array dtype {array.dtype} is not numeric")
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        return tensor.to(self.device)

    def _default_predict(self, data, model):
        import torch

        with torch.no_grad():
            return model(data.to(self.device) if hasattr(data, "to") else data)

    def _default_output(self, prediction, accept):
        for content_type in parse_accept(accept):
            if content_type in (JSON, CSV, NPY):
                return encode_array(prediction, content_type), content_type
            if content_type in ("*/*", "application/*"):
                return encode_array(prediction, JSON), JSON
        raise NotAcceptable(f"Accept {accept!r} names no type the default output_fn writes: use {JSON}, {CSV} or {NPY}")

    def decode(self, body: bytes, media_type: str, headers: Mapping[str, str]) -> Request:
        return Request(body, media_type, headers)

    def forward(self, payloads: list[Request]) -> Sequence[Any]:
        return [self._one(p) for p in payloads]

    def _one(self, request: Request) -> Reply | BaseException:
        input_data: Any = request.body
        if request.media_type in UTF8_TYPES:
            try:
                input_data = request.body.decode("utf-8")
            except UnicodeDecodeError:
                return InvalidInput(f"a {request.media_type} body must be UTF-8")
        accept = request.accept or JSON
        if self._transform is not None:
            result = self._transform(self.model, input_data, request.media_type, accept)
            return _reply(result, accept)
        try:
            data = self._input(input_data, request.media_type)
        except ClientError as exc:
            return exc
        except Exception as exc:  # the script could not read this request: the client's fault (400)
            log.info(
                "input_fn rejected request %s: %s: %s", request.headers.get("x-request-id"), type(exc).__name__, exc
            )
            return InputFnError(f"input_fn could not read the request: {type(exc).__name__}: {exc}")
        prediction = self._predict(data, self.model)
        return _reply(self._output(prediction, accept), accept)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "device": self.device, **self._description}


class FailedRunner(Runner):
    """A model whose model_fn failed: every request is a 500 (the cause is in the log), others keep serving."""

    kind = "failed"

    def __init__(self, message: str) -> None:
        self.message = message

    def forward(self, payloads: list[Any]) -> Sequence[Any]:
        return [RuntimeError(self.message) for _ in payloads]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "error": self.message}


def _reply(result: Any, accept: str) -> Reply:
    if isinstance(result, tuple) and len(result) == 2:
        body, content_type = result
    else:
        body, content_type = result, accept if accept not in ("*/*", "") else JSON
    if isinstance(body, str):
        body = body.encode("utf-8")
    if not isinstance(body, (bytes, bytearray)):
        raise TypeError(
            f"output_fn returned {type(body).__name__}: it must return bytes or str (or a (body, content_type) tuple)"
        )
    return Reply(bytes(body), content_type)


def load_inference_script(root: Path, device: str | None = None, script: Path | None = None) -> Runner:
    import torch

    code_dir = root / "code"
    script = script or code_dir / "inference.py"
    requirements = code_dir / "requirements.txt"
    if requirements.is_file():
        log.warning("%s lists requirements; they are not installed at run time: bake them into the image", requirements)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        module = import_model_file(script, f"deepcloud_inference_{abs(hash(str(script)))}")
    except Exception as exc:
        log.exception("importing %s failed", script)
        return FailedRunner(f"importing {script.name} failed: {type(exc).__name__}: {exc}")
    description = {
        "script": str(script),
        "functions": sorted(
            name
            for name in ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn")
            if hasattr(module, name)
        ),
        "requirements": str(requirements) if requirements.is_file() else None,
    }
    try:
        model = getattr(module, "model_fn", default_model_fn)(str(root))
    except Exception as exc:
        log.exception("model_fn in %s failed", script)
        return FailedRunner(f"model_fn failed: {type(exc).__name__}: {exc}")
    return InferenceScriptRunner(module, model, device, description)
