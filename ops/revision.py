"""The source revision ops stamps on what it makes: images (their tag and REVISION build argument) and the
DEEPCLOUD_GIT_REVISION a training job gets, which the trainer writes into the model's manifest."""

from __future__ import annotations

import subprocess
from pathlib import Path

UNKNOWN = "unknown"
"""Outside a git checkout (or without git): the same word the trainer records when it finds no revision."""
SHORT = 12
"""Hex digits of the revision in an image tag: ``<revision>-<content digest>``."""


def _git(repo: Path, *args: str) -> str | None:
    """git's stdout, stripped, or None when git is missing, slow or fails."""
    try:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def revision(repo: Path, *, short: bool = False) -> str:
    """HEAD's commit, with ``-dirty`` when tracked files have changes; ``short``: its first 12 hex digits only, for an
    image tag, which names content already (its digest) and so needs no ``-dirty``. ``unknown`` outside git."""
    head = _git(repo, "rev-parse", "HEAD")
    if not head:
        return UNKNOWN
    if short:
        return head[:SHORT]
    changed = _git(repo, "status", "--porcelain", "--untracked-files=no")
    return head + ("-dirty" if changed else "")
