"""Write the model artifact (docs/artifact.md): model.pt2 (torch.export) + manifest.json.

Each file is written under a temporary name and renamed into place; manifest.json goes last, so
a directory with a manifest is always complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT_VERSION = 1
MODEL_FILE = "model.pt2"
MANIFEST_FILE = "manifest.json"
MAX_BATCH = 4096
"""Largest batch the exported program accepts; the dynamic batch dimension is bounded by it."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def git_revision() -> str:
    """The source revision: DEEPCLOUD_GIT_REVISION (set by ops and the image build), else git."""
    if rev := os.environ.get("DEEPCLOUD_GIT_REVISION"):
        return rev
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def export_program(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """torch.export the model in eval mode on CPU with a dynamic batch dimension, and save it."""
    model = model.eval().cpu()
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    program = torch.export.export(model, (example.cpu(),), dynamic_shapes=({0: batch},))
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")  # torch.export.save wants a .pt2 suffix
    try:
        torch.export.save(program, tmp)
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_program(path: Path) -> nn.Module:
    return torch.export.load(path).module()


def write_manifest(
    model_dir: Path,
    *,
    input_shape: list[int],
    classes: tuple[str, ...],
    metrics: dict[str, Any],
    config: dict[str, Any],
    normalization: dict[str, Any],
) -> Path:
    model_path = model_dir / MODEL_FILE
    manifest = {
        "format_version": FORMAT_VERSION,
        "model": {
            "file": MODEL_FILE,
            "format": "torch.export",
            "sha256": sha256_file(model_path),
            "max_batch_size": MAX_BATCH,
        },
        "input": {"dtype": "float32", "shape": input_shape, "layout": "NCHW"},
        "output": {"type": "logits", "shape": [len(classes)]},
        "preprocessing": {
            "pixel_range": [0, 255],
            "color_mode": "L" if input_shape[0] == 1 else "RGB",
            "size": input_shape[1:],
            "normalization": {**normalization, "applied": "in_model"},
        },
        "labels": list(classes),
        "metrics": metrics,
        "training": {
            "config": config,
            "torch_version": torch.__version__,
            "git_revision": git_revision(),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    }
    path = model_dir / MANIFEST_FILE
    atomic_write_bytes(path, (json.dumps(manifest, indent=2) + "\n").encode())
    return path
