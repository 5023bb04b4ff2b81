"""Load one model of any kind from its path, on the inference thread: the kind is read from what is there.

- ``*.mar``: a TorchServe archive (``MAR-INF/MANIFEST.json``), extracted safely, run by its handler;
- a directory or ``model.tar.gz`` with ``manifest.json``: this project's artifact; when the manifest has a
  ``handler`` field, that handler (from the artifact's ``code/`` folder) runs it instead;
- a directory or ``model.tar.gz`` with ``code/inference.py`` and no ``manifest.json``: a SageMaker PyTorch
  artifact, run by its ``model_fn``/``input_fn``/``predict_fn``/``output_fn``.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
from pathlib import Path

from serving.artifact import MANIFEST_FILE, ArtifactError, load_artifact, read_manifest, resolve_model_dir
from serving.runner import NativeRunner, Runner
from serving.store import ModelRef

INFERENCE_SCRIPT = Path("code") / "inference.py"


def model_root(path: Path) -> Path:
    """The directory to load from: ``path``, or its model.tar.gz extracted (safely) to a new temp dir."""
    if path.is_dir() and ((path / MANIFEST_FILE).is_file() or (path / INFERENCE_SCRIPT).is_file()):
        return path
    return resolve_model_dir(path)


def load_runner(ref: ModelRef, device: str | None = None, batch_size: int = 1, trusted: bool = False) -> Runner:
    """``trusted`` (``--trust-model-files``): a ``.pt2`` the strict reader refuses goes to torch.export.load."""
    if ref.path.is_file() and ref.path.suffix == ".mar":
        from serving.torchserve import load_mar

        return load_mar(ref.path, model_name=ref.name, device=device, batch_size=batch_size)
    root = model_root(ref.path)
    if (root / MANIFEST_FILE).is_file():
        manifest = read_manifest(root)
        if manifest.get("handler"):
            from serving.torchserve import load_manifest_handler

            return load_manifest_handler(root, manifest, model_name=ref.name, device=device, batch_size=batch_size)
        from serving.tuning import tune_for_cpu

        return NativeRunner(tune_for_cpu(load_artifact(root, device=device, trusted=trusted), batch_size))
    if (root / INFERENCE_SCRIPT).is_file():
        from serving.sagemaker import load_inference_script

        return load_inference_script(root, device=device)
    raise ArtifactError(f"{ref.path}: no {MANIFEST_FILE}, no {INFERENCE_SCRIPT} and not a .mar: nothing to serve")


def release_freed_heap() -> None:
    """Hand the heap pages that loading (or unloading) freed back to the OS: glibc keeps them mapped
    otherwise, and they would count in the server's resident memory for its whole life."""
    gc.collect()  # a model's tensors go with their last reference; reference cycles need a collection
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)
