"""Find, verify and load a model artifact (docs/artifact.md) without running code from it.

Checks, in order: manifest.json is there and of a known format version; the model file's sha256
matches the manifest; then serving/program.py reads the torch.export archive, which refuses any file that
holds more than a plain program of allowed tensor operators and raw tensors (it never unpickles).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from torch import nn

SUPPORTED_FORMAT_VERSIONS = (1,)
MANIFEST_FILE = "manifest.json"


class ArtifactError(Exception):
    """The artifact cannot be served; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Artifact:
    model_dir: Path
    manifest: dict[str, Any]
    module: nn.Module
    device: str = "cpu"
    channels_last: bool = False
    """Inputs are made channels-last before the forward pass (serving/tuning.py chose it at load)."""

    @property
    def labels(self) -> list[str]:
        return self.manifest["labels"]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest["input"]["shape"])

    @property
    def max_batch_size(self) -> int:
        return int(self.manifest["model"].get("max_batch_size", 1))

    @property
    def pixel_range(self) -> tuple[float, float]:
        low, high = self.manifest.get("preprocessing", {}).get("pixel_range", (0, 255))
        return float(low), float(high)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a model.tar.gz, refusing links, absolute paths and '..' (zip-slip)."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar.getmembers():
                parts = PurePosixPath(member.name).parts
                if member.name.startswith("/") or ".." in parts:
                    raise ArtifactError(f"{archive}: member {member.name!r} escapes the archive; refusing it")
                if not (member.isfile() or member.isdir()):
                    raise ArtifactError(f"{archive}: member {member.name!r} is a link or device; refusing it")
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise ArtifactError(f"{archive} is not a readable tar.gz ({exc})") from None


_SCRATCH: list[Path] = []


def scratch_dir(prefix: str) -> Path:
    """A new temporary directory for an extracted archive, removed by :func:`remove_scratch`: at the
    server's shutdown (signals included, serving/server.py), else when the interpreter exits."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    _SCRATCH.append(path)
    return path


def remove_scratch() -> None:
    while _SCRATCH:
        shutil.rmtree(_SCRATCH.pop(), ignore_errors=True)


atexit.register(remove_scratch)  # in-process users (tests, scripts) leave nothing behind either


def resolve_model_dir(path: Path, scratch: Path | None = None) -> Path:
    """A directory holding manifest.json: ``path`` itself, or a model.tar.gz at or in it, extracted."""
    if path.is_dir() and (path / MANIFEST_FILE).exists():
        return path
    archive = path / "model.tar.gz" if path.is_dir() else path
    if archive.is_file() and archive.name.endswith((".tar.gz", ".tgz", ".tar")):
        dest = scratch_dir("deepcloud-model-") if scratch is None else Path(tempfile.mkdtemp(dir=scratch))
        safe_extract(archive, dest)
        return dest
    if not path.exists():
        raise ArtifactError(f"model path {path} does not exist: set SM_MODEL_DIR to a trained artifact")
    raise ArtifactError(
        f"no {MANIFEST_FILE} in {path}: point SM_MODEL_DIR at a directory or model.tar.gz written by the trainer"
    )


def read_json(path: Path, missing: str) -> Any:
    """A JSON file's content; ArtifactError with ``missing`` when absent, or naming the file when malformed."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(missing) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc})") from None


def read_manifest(model_dir: Path) -> dict[str, Any]:
    path = model_dir / MANIFEST_FILE
    manifest = read_json(path, f"no {MANIFEST_FILE} in {model_dir}: is this a trainer artifact?")
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise ArtifactError(
            f"{path}: format_version {version!r} is not supported (this server reads "
            f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))}); upgrade the server or re-train"
        )
    # A manifest that names a handler describes its input in the handler's code, not here.
    for key in ("model",) if manifest.get("handler") else ("model", "input", "labels"):
        if key not in manifest:
            raise ArtifactError(f"{path}: required field '{key}' is missing; re-run the trainer")
    return manifest


def load_model_file(path: Path, trusted: bool = False) -> nn.Module:
    """A ``.pt2`` read by serving/program.py; ArtifactError saying why when it is refused or unreadable.
    ``trusted`` (``--trust-model-files``) lets ``torch.export.load`` take what the reader refuses."""
    from serving.program import load_program
    from serving.pt2_archive import Unsupported

    try:
        return load_program(path, trusted=trusted)
    except Unsupported as why:
        raise ArtifactError(
            f"{path} is refused: {why} (a model file may only hold a plain torch.export program; "
            "see docs/serving.md, 'Threat model')"
        ) from None
    except Exception as exc:
        raise ArtifactError(f"{path} could not be loaded by torch.export ({type(exc).__name__}: {exc})") from None


def load_artifact(model_dir: Path, device: str | None = None, trusted: bool = False) -> Artifact:
    """Verify and load; on the GPU when one is present (``device`` overrides: "cpu", "cuda", "cuda:1")."""
    manifest = read_manifest(model_dir)
    model = manifest["model"]
    if model.get("format") != "torch.export":
        raise ArtifactError(f"model format {model.get('format')!r} is not supported: expected 'torch.export'")
    name = PurePosixPath(model["file"])
    if name.is_absolute() or ".." in name.parts:
        raise ArtifactError(f"manifest model file {model['file']!r} points outside the artifact")
    path = model_dir / name
    if not path.is_file():
        raise ArtifactError(f"model file {path} named in the manifest does not exist; re-run the trainer")
    actual = sha256_file(path)
    if actual != model["sha256"]:
        raise ArtifactError(
            f"checksum mismatch for {path}: sha256 {actual[:12]}… but the manifest says "
            f"{str(model['sha256'])[:12]}…; the artifact is corrupted or was modified, re-run the trainer"
        )
    module = load_model_file(path, trusted)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device != "cpu":
        module = module.to(device)
    return Artifact(model_dir=model_dir, manifest=manifest, module=module, device=device)
