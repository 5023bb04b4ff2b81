"""Run TorchServe ``.mar`` archives and handlers unchanged, without Java: TorchServe's handler API in-process.

A ``.mar`` made by ``torch-model-archiver`` is a zip with ``MAR-INF/MANIFEST.json``. It is extracted
safely (absolute paths, ``..`` and symlinks refused), its manifest read (model name and version, handler,
serialized file, model file, extra files; ``requirementsFile`` is reported and never installed), and its
handler resolved the way TorchServe's ``TsModelLoader`` does it:

- ``handler.py`` or ``handler.py:fn`` in the archive: a module-level ``handle(data, context)`` (or ``fn``),
  else the one class the module defines, instantiated, ``initialize(context)`` then ``handle(data, context)``
  — subclasses of TorchServe's ``BaseHandler`` (the optional ``ts`` package) included;
- a built-in name: ``image_classifier`` and ``tensor`` are built into this server (serving/handlers.py,
  no torchvision needed); any other name is imported from ``ts.torch_handler`` when ``ts`` is installed.

Each request reaches the handler as TorchServe's frontend passes it: ``{"body": value}`` where value is
the parsed JSON for ``application/json``, a str for ``text/*``, else the raw bytes; a batch is a list of
those. Results are encoded as TorchServe does (bytes as is, str as UTF-8, anything else as JSON) with the
content type and status the handler set on the context.

Errors: an exception in ``preprocess`` is the client's (400, with its message); TorchServe's
``PredictionException`` keeps its status; anything else is a 500 with a request id.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import stat
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

from serving.artifact import ArtifactError, read_json, scratch_dir, sha256_file
from serving.errors import ClientError, InvalidInput, UnsupportedMediaType
from serving.runner import Reply, Request, Runner
from serving.torchserve_context import Context, RequestProcessor
from serving.usercode import import_model_file

log = logging.getLogger("serving")

MAR_MANIFEST = "MAR-INF/MANIFEST.json"
BUILT_IN = ("image_classifier", "tensor")


# ------------------------------------------------------------------------------------------- archive handling


def safe_extract_zip(archive: Path, dest: Path) -> None:
    """Extract a zip (``.mar``), refusing absolute paths, '..', symlinks and special files (zip-slip)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for member in members:
                parts = PurePosixPath(member.filename.replace("\\", "/")).parts
                if member.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                    raise ArtifactError(f"{archive}: member {member.filename!r} escapes the archive; refusing it")
                kind = stat.S_IFMT(member.external_attr >> 16)  # 0 when the archiver stored no file type
                if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise ArtifactError(f"{archive}: member {member.filename!r} is a link or device; refusing it")
            zf.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise ArtifactError(f"{archive} is not a readable .mar (zip) archive ({exc})") from None


def read_mar_manifest(root: Path, archive: Path) -> dict[str, Any]:
    manifest = read_json(root / MAR_MANIFEST, f"{archive}: no {MAR_MANIFEST}; was it made by torch-model-archiver?")
    model = manifest.get("model") if isinstance(manifest, dict) else None
    if not isinstance(model, dict) or not model.get("handler"):
        raise ArtifactError(f"{archive}: {MAR_MANIFEST} names no model handler")
    return manifest


# ---------------------------------------------------------------------------------------- loading a handler


class PreprocessError(InvalidInput):
    """An exception in the handler's ``preprocess``: the request was not what the handler takes."""


def _defined_classes(module) -> list[type]:
    return [v for v in vars(module).values() if isinstance(v, type) and v.__module__ == module.__name__]


def resolve_handler(handler: str, code_dir: Path, unique: str) -> tuple[Callable, Callable[[Context], Any], Any]:
    """(entry, initialize, instance-or-None) for a handler string, as TorchServe's TsModelLoader resolves it."""
    module_part, _, function_name = handler.partition(":")
    file_name = PurePosixPath(module_part).name
    path = code_dir / (file_name if file_name.endswith(".py") else f"{file_name}.py")
    module: ModuleType | type  # a handler module, or one of our built-in handler classes
    if path.is_file():
        try:
            module = import_model_file(path, unique)
        except ImportError as exc:
            raise ArtifactError(str(exc)) from None
    elif handler in BUILT_IN:
        from serving import handlers

        module = handlers.BUILT_INS[handler]
    else:
        try:
            module = importlib.import_module(f"ts.torch_handler.{module_part}")
        except ImportError as exc:
            raise ArtifactError(
                f"handler {handler!r} is neither a file in the archive nor a built-in ({', '.join(BUILT_IN)}); "
                f"TorchServe's own built-ins need its 'ts' package: pip install torchserve==0.12.0 ({exc})"
            ) from None
    function_name = function_name or "handle"
    if isinstance(module, type):  # our built-ins are classes
        instance = module()
        return instance.handle, instance.initialize, instance
    if hasattr(module, function_name) and callable(getattr(module, function_name)):
        entry = getattr(module, function_name)
        return entry, (lambda context: entry(None, context)), None
    classes = _defined_classes(module)
    if len(classes) != 1:
        names = ", ".join(c.__name__ for c in classes) or "none"
        raise ArtifactError(
            f"handler {handler!r}: expected a '{function_name}' function or exactly one class, found classes: {names}"
        )
    instance = classes[0]()
    if not hasattr(instance, "handle"):
        raise ArtifactError(f"handler class {classes[0].__name__} has no handle(data, context) method")
    return instance.handle, instance.initialize, instance


def _mark_preprocess_errors(instance: Any) -> None:
    """Wrap the handler's own ``preprocess`` so its exceptions become 400s, whoever calls it."""
    original = getattr(instance, "preprocess", None)
    if not callable(original):
        return

    def preprocess(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        except ClientError:
            raise
        except Exception as exc:
            raise PreprocessError(f"the handler could not read the request: {type(exc).__name__}: {exc}") from exc

    instance.preprocess = preprocess


# ----------------------------------------------------------------------------------------------- the runner


def _torchserve_value(request: Request) -> Any:
    """The value TorchServe's frontend hands a handler for this body and content type."""
    if request.media_type == "application/json":
        try:
            return json.loads(request.body)
        except (ValueError, RecursionError):
            return bytearray(request.body)  # TorchServe forwards undecodable JSON as bytes
    if request.media_type.startswith("text"):
        try:
            return request.body.decode("utf-8")
        except UnicodeDecodeError:
            return bytearray(request.body)
    return bytearray(request.body)


def _encode_result(value: Any) -> tuple[bytes, str]:
    import torch

    if isinstance(value, (bytes, bytearray)):
        return bytes(value), "application/octet-stream"
    if isinstance(value, str):
        return value.encode("utf-8"), "text/plain; charset=utf-8"
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().tolist()  # TorchServe would torch.save it; clients want numbers
    return json.dumps(value, indent=2).encode("utf-8"), "application/json"


class HandlerRunner(Runner):
    kind = "torchserve-handler"

    def __init__(self, entry: Callable, context: Context, description: dict[str, Any]) -> None:
        self._entry = entry
        self.context = context
        self._description = description
        self.max_batch_size = context.system_properties["batch_size"]
        self.device = "cuda" if context.system_properties["gpu_id"] is not None else "cpu"

    def decode(self, body: bytes, media_type: str, headers: Mapping[str, str]) -> Request:
        if media_type.startswith("multipart/"):
            raise UnsupportedMediaType(
                "multipart/form-data bodies are not supported: send the file itself as the "
                "body (curl --data-binary @file, or curl -T file)"
            )
        if not body:
            raise InvalidInput("empty body: send the input the model's handler reads")
        return Request(body, media_type, headers)

    def forward(self, payloads: list[Request]) -> Sequence[Any]:
        context = self.context
        context.request_ids = {i: r.headers.get("x-request-id", "") for i, r in enumerate(payloads)}
        context.request_processor = [
            RequestProcessor({**r.headers, "body": {"content-type": r.media_type}}) for r in payloads
        ]
        context.metrics.request_ids = context.request_ids
        data = [{"body": _torchserve_value(r)} for r in payloads]
        try:
            outputs = self._entry(data, context)
        except Exception as exc:
            code = getattr(exc, "error_code", None)
            if type(exc).__name__ == "PredictionException" and isinstance(code, int):
                return [
                    Reply(
                        json.dumps({"code": "prediction_error", "message": getattr(exc, "message", str(exc))}).encode(),
                        "application/json",
                        code,
                    )
                ] * len(payloads)
            raise
        if not isinstance(outputs, list) or len(outputs) != len(payloads):
            got = len(outputs) if isinstance(outputs, list) else type(outputs).__name__
            raise RuntimeError(
                f"handler returned {got} results for a batch of {len(payloads)}: it must return "
                "a list with one result per request"
            )
        replies = []
        for idx, value in enumerate(outputs):
            body, media_type = _encode_result(value)
            status, _ = context.get_response_status(idx)
            replies.append(Reply(body, context.get_response_content_type(idx) or media_type, status or 200))
        return replies

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "device": self.device, **self._description}


def _gpu_id(device: str | None) -> int | None:
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return None
    return int(device.split(":", 1)[1]) if device and ":" in device else 0


def make_runner(
    handler: str,
    code_dir: Path,
    manifest: dict[str, Any],
    *,
    model_name: str,
    device: str | None,
    batch_size: int,
    unique: str,
    description: dict[str, Any],
    model_dir: Path | None = None,
) -> HandlerRunner:
    """``code_dir`` holds the handler's files; ``model_dir`` (default: the same) is the context's model_dir."""
    entry, initialize, instance = resolve_handler(handler, code_dir, unique)
    if instance is not None:
        _mark_preprocess_errors(instance)
    context = Context(model_name, model_dir or code_dir, manifest, batch_size, _gpu_id(device))
    try:
        initialize(context)
    except ArtifactError:
        raise
    except Exception as exc:
        log.exception("handler %s failed in initialize", handler)
        raise ArtifactError(
            f"model {model_name!r}: the handler's initialize failed: {type(exc).__name__}: {exc}"
        ) from None
    return HandlerRunner(entry, context, description)


def load_mar(archive: Path, *, model_name: str, device: str | None, batch_size: int) -> HandlerRunner:
    root = scratch_dir("deepcloud-mar-")
    safe_extract_zip(archive, root)
    manifest = read_mar_manifest(root, archive)
    model = manifest["model"]
    if model.get("requirementsFile"):
        log.warning(
            "model %s: %s lists requirements (%s); they are not installed at run time: bake them into the image",
            model_name,
            archive.name,
            model["requirementsFile"],
        )
    description = {
        "archive": str(archive),
        "mar_model_name": model.get("modelName"),
        "mar_model_version": model.get("modelVersion"),
        "handler": model["handler"],
        "serialized_file": model.get("serializedFile"),
        "model_file": model.get("modelFile"),
        "requirements": model.get("requirementsFile"),
    }
    unique = f"deepcloud_handler_{abs(hash((str(archive), model_name)))}"
    return make_runner(
        model["handler"],
        root,
        manifest,
        model_name=model_name,
        device=device,
        batch_size=batch_size,
        unique=unique,
        description=description,
    )


def load_manifest_handler(
    root: Path, manifest: dict[str, Any], *, model_name: str, device: str | None, batch_size: int
) -> Runner:
    """This project's artifact with ``"handler": {"style": "torchserve"|"sagemaker", "entry": "file.py"}``."""
    spec = manifest["handler"]
    if not isinstance(spec, dict) or spec.get("style") not in ("torchserve", "sagemaker") or not spec.get("entry"):
        raise ArtifactError(
            f'{root}/manifest.json: \'handler\' must be {{"style": "torchserve" or "sagemaker", '
            '"entry": "<file in code/>[:function]"}'
        )
    code_dir = root / "code"
    for rel, digest in (manifest.get("files") or {}).items():
        path = root / PurePosixPath(rel)
        if PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts or not path.is_file():
            raise ArtifactError(f"{root}/manifest.json: file {rel!r} is missing or outside the artifact")
        if sha256_file(path) != digest:
            raise ArtifactError(f"checksum mismatch for {path}: the artifact is corrupted or was modified")
    entry_file = PurePosixPath(spec["entry"].partition(":")[0])
    if entry_file.is_absolute() or ".." in entry_file.parts or not (code_dir / entry_file).is_file():
        raise ArtifactError(f"{root}/manifest.json: handler entry {spec['entry']!r} is not a file in code/")
    if spec["style"] == "sagemaker":
        from serving.sagemaker import load_inference_script

        return load_inference_script(root, device=device, script=code_dir / entry_file)
    # The handler sees a TorchServe-shaped manifest; model_dir is the artifact's root, where its files are.
    model_file = manifest.get("model", {}).get("file")
    torchserve_manifest = {
        "model": {
            "modelName": model_name,
            "handler": spec["entry"],
            **({"serializedFile": model_file} if model_file else {}),
        },
        "deepcloud": manifest,
    }
    unique = f"deepcloud_handler_{abs(hash((str(root), model_name)))}"
    return make_runner(
        spec["entry"],
        code_dir,
        torchserve_manifest,
        model_name=model_name,
        device=device,
        batch_size=batch_size,
        unique=unique,
        description={"handler": spec["entry"]},
        model_dir=root,
    )
