"""The one source revision ops stamps (ops/revision.py): the full one for DEEPCLOUD_GIT_REVISION, its 12-hex prefix
for image tags, and `unknown` outside git, the word the trainer records itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ops.revision import UNKNOWN, revision
from tests.conftest import REPO


def test_the_short_revision_is_the_start_of_the_full_one() -> None:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
    full = revision(REPO)
    assert full.removesuffix("-dirty") == head.stdout.strip()
    assert revision(REPO, short=True) == full[:12]


def test_outside_git_it_is_unknown(tmp_path: Path) -> None:
    assert revision(tmp_path) == revision(tmp_path, short=True) == UNKNOWN == "unknown"
