"""Pack a model directory into model.tar.gz: the one packer, used by the trainer on ECS and by ops for the local
target, which both stand in for what SageMaker does with /opt/ml/model at the end of a job.

Standard library only, so that ops imports it without importing torch. The directory's files sit at the archive
root (docs/artifact.md), manifest.json first so that a reader of the stream (``make deploy TARGET=aws`` reads the
input shape from S3 with ``tarfile`` mode ``r|gz``) finds it without reading the program, then the rest by name.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

MANIFEST = "manifest.json"


def members(model_dir: Path) -> list[Path]:
    """The top-level entries of ``model_dir`` in archive order: manifest.json, then the others by name."""
    return sorted(model_dir.iterdir(), key=lambda p: (p.name != MANIFEST, p.name))


def pack_model(model_dir: Path, archive: Path) -> Path:
    """Write ``archive`` from ``model_dir`` under a temporary name and rename it, so no partial archive is left."""
    tmp = archive.with_name(f".{archive.name}.tmp-{os.getpid()}")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for path in members(model_dir):
                tar.add(path, arcname=path.name)
        os.replace(tmp, archive)
    finally:
        tmp.unlink(missing_ok=True)
    return archive
