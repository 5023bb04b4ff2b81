"""Checkpoints that survive SIGKILL, torn writes and bit rot.

Layout, one directory per checkpoint under ``<base>/checkpoints`` (synced to S3 by SageMaker)::

    step-<n>/state.pt        the training state (trainer/state.py's TrainState: model, optimizer, ...)
    step-<n>/manifest.json   sha256 and size of every file: the commit marker, written last

A checkpoint is built in a hidden temporary directory, every file fsynced, then renamed into place,
so ``step-<n>/`` exists only once it is complete. On start the newest checkpoint whose manifest exists
and whose checksums verify is loaded; a torn or corrupted one is reported and skipped, never loaded.
``state.pt`` is read with ``torch.load(weights_only=True)``: a checkpoint cannot run code.

Several processes (hosts) resume from one checkpoint: only global rank 0 writes them and only rank 0
looks for the newest valid one; :func:`share_latest` sends its verified bytes to the other ranks over the
process group. No rank trusts its own folder, which on SageMaker holds whatever S3 restored or an earlier
run left there.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainer.artifact import sha256_file

STATE_FILE = "state.pt"
COMMIT_FILE = "manifest.json"
FORMAT_VERSION = 1
_NAME = re.compile(r"^step-(\d+)$")


@dataclass
class Checkpointing:
    """Where checkpoints go and how many to keep; ``uploader`` mirrors each to S3 when configured."""

    root: Path
    keep: int
    uploader: Callable[[Path], None] | None = None


@dataclass(frozen=True, slots=True)
class Loaded:
    path: Path
    step: int
    state: dict[str, Any]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def step_dirs(root: Path) -> list[tuple[int, Path]]:
    """Committed-looking checkpoint directories, newest first (temporary ones are ignored)."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found, reverse=True)


def save(root: Path, step: int, state: dict[str, Any]) -> Path:
    """Write ``state`` as checkpoint ``step-<step>`` atomically and return its path."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        _write_synced(tmp / STATE_FILE, buffer.getvalue())
        files = {STATE_FILE: {"sha256": sha256_file(tmp / STATE_FILE), "bytes": (tmp / STATE_FILE).stat().st_size}}
        commit = {
            "format_version": FORMAT_VERSION,
            "step": step,
            "files": files,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _write_synced(tmp / COMMIT_FILE, (json.dumps(commit, indent=2) + "\n").encode())
        _fsync_dir(tmp)
        if final.exists():  # a re-run of the same step after a resume: replace it whole
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def verify(path: Path) -> str | None:
    """None when the checkpoint is complete and intact, else why not."""
    commit_path = path / COMMIT_FILE
    if not commit_path.exists():
        return "no commit marker (manifest.json): the write did not finish"
    try:
        commit = json.loads(commit_path.read_text())
        files = commit["files"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        return "manifest.json is unreadable"
    if commit.get("format_version") != FORMAT_VERSION:
        return f"format_version {commit.get('format_version')!r} is not {FORMAT_VERSION}"
    for name, meta in files.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != meta["bytes"]:
            return f"{name} has {file.stat().st_size} bytes, the manifest says {meta['bytes']} (truncated)"
        if sha256_file(file) != meta["sha256"]:
            return f"{name} does not match its sha256 (corrupted)"
    return None


def load_latest(root: Path, report: Callable[[str], None] = print) -> Loaded | None:
    """The newest checkpoint that verifies; every one skipped on the way is reported with the reason."""
    for step, path in step_dirs(root):
        problem = verify(path)
        if problem is None:
            try:
                state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
            except Exception as exc:  # verified bytes that still do not load: treat as corrupted
                problem = f"{STATE_FILE} does not load ({type(exc).__name__}: {exc})"
            else:
                return Loaded(path=path, step=step, state=state)
        report(f"checkpoint {path} skipped: {problem}")
    return None


def share_latest(loaded: Loaded | None, device: torch.device) -> Loaded | None:
    """Rank 0's ``loaded`` on every rank of the (initialised) process group; call it on all ranks at once.

    Rank 0 sends the step, the sha256 and the bytes of its verified ``state.pt`` (read again, and checked
    against the manifest's sha256); the others check the bytes against that sha256 and load them with
    ``weights_only=True``, exactly as rank 0 loaded its file. Only tensors cross the wire: nothing is
    unpickled but what ``weights_only`` allows. ``device`` is where the backend moves tensors (CPU for
    gloo, the rank's GPU for NCCL).
    """
    import torch.distributed as dist

    sender = dist.get_rank() == 0
    data = b""
    digest = bytes(32)
    if sender and loaded is not None:
        data = (loaded.path / STATE_FILE).read_bytes()
        digest = hashlib.sha256(data).digest()
        expected = json.loads((loaded.path / COMMIT_FILE).read_text())["files"][STATE_FILE]["sha256"]
        if digest.hex() != expected:  # changed on disk since it was verified: refuse rather than diverge
            raise RuntimeError(f"{loaded.path / STATE_FILE} changed while it was being shared")
    header = torch.tensor(
        [loaded.step if sender and loaded is not None else -1, len(data)], dtype=torch.int64, device=device
    )
    dist.broadcast(header, src=0)
    step, size = (int(v) for v in header.tolist())
    if step < 0:
        return None
    payload = (
        torch.frombuffer(bytearray(digest + data), dtype=torch.uint8).to(device)
        if sender
        else torch.empty(32 + size, dtype=torch.uint8, device=device)
    )
    dist.broadcast(payload, src=0)
    if sender:
        return loaded
    received = payload.cpu().numpy().tobytes()
    digest, data = received[:32], received[32:]
    if hashlib.sha256(data).digest() != digest:
        raise RuntimeError(f"checkpoint step-{step} arrived from rank 0 with another sha256 than it was sent with")
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return Loaded(path=Path(f"rank-0:step-{step}"), step=step, state=state)


def prune(root: Path, keep: int) -> list[Path]:
    """Keep the newest ``keep`` committed checkpoints; delete older ones and stale temporary directories.

    Only the commit marker is checked here (cheap); checksums are verified when a checkpoint is loaded.
    """
    removed, kept = [], 0
    for _, path in step_dirs(root):
        if kept < keep and (path / COMMIT_FILE).exists():
            kept += 1
            continue
        if kept >= keep:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    for stale in root.glob(".tmp-step-*"):  # left behind by a SIGKILL mid-write
        if not stale.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(stale, ignore_errors=True)
    return removed
