"""The Makefile is the user interface: `help` is the default and every target says what it does."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import REPO

REQUIRED = ("setup", "data", "images", "train", "deploy", "predict", "destroy", "demo", "test", "lint")


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


def test_ci_installs_the_engine_and_builds_the_images_before_the_tests() -> None:
    """The container tests (tests/container) must run in CI from a fresh machine: Debian's docker.io and mmdebstrap
    are installed first, the images built by `make images`, and CI set so that the tests fail rather than skip."""
    steps = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert "scripts/install-engine" in steps
    assert steps.index("scripts/install-engine") < steps.index("make images") < steps.index("make test")
    assert any(re.match(r"export CI=", step) for step in steps)
    assert (REPO / "scripts" / "install-engine").stat().st_mode & 0o111, "scripts/install-engine is not executable"


def test_lint_runs_hadolint_on_both_dockerfiles_at_warning_level() -> None:
    out = subprocess.run(["make", "-n", "lint"], cwd=REPO, capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert re.search(r"hadolint --failure-threshold warning trainer/Dockerfile serving/Dockerfile$", out, flags=re.M)
