"""The Makefile is the user interface: `help` is the default and every target says what it does."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import REPO

REQUIRED = ("setup", "data", "train", "deploy", "predict", "destroy", "demo", "test", "lint")


def test_help_is_the_default_goal_and_lists_every_target() -> None:
    out = subprocess.run(["make", "-s"], cwd=REPO, capture_output=True, text=True, timeout=60, check=True).stdout
    listed = dict(re.findall(r"^  (\S+)\s+(.+)$", out, flags=re.M))
    for target in REQUIRED:
        assert listed.get(target), f"`make help` does not document {target!r}"


def test_every_target_has_a_description() -> None:
    text = (REPO / "Makefile").read_text()
    targets = re.findall(r"^([a-z][a-z-]*):(?!=)(.*)$", text, flags=re.M)
    undocumented = [name for name, rest in targets if "## " not in rest]
    assert undocumented == [], f"targets without a '## description': {undocumented}"
    assert {name for name, _ in targets} >= set(REQUIRED)


def test_ci_runs_make_test() -> None:
    assert re.search(r"^make test$", (REPO / ".ci" / "run").read_text(), flags=re.M)
