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
    steps = [
        line.strip()
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "scripts/install-engine" in steps
    assert steps.index("scripts/install-engine") < steps.index("make images") < steps.index("make test")
    assert any(re.match(r"export CI=", step) for step in steps)
    assert (REPO / "scripts" / "install-engine").stat().st_mode & 0o111, "scripts/install-engine is not executable"


def test_lint_runs_hadolint_on_both_dockerfiles_at_warning_level() -> None:
    out = subprocess.run(
        ["make", "-n", "lint"], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert re.search(r"hadolint --failure-threshold warning trainer/Dockerfile serving/Dockerfile$", out, flags=re.M)


def test_clean_removes_caches_and_keeps_the_venv_and_the_state(tmp_path) -> None:
    """`make clean` runs without `setup` and removes only what a rerun makes again, never .venv or .deepcloud."""
    (tmp_path / "Makefile").write_text((REPO / "Makefile").read_text())
    made = [
        ".pytest_cache/v",
        ".ruff_cache/x",
        ".mypy_cache/3.11/x",
        ".wheelhouse/serving/a.whl",
        "ops/__pycache__/a.pyc",
    ]
    kept = [".venv/lib/__pycache__/a.pyc", ".venv-peers/x", ".deepcloud/data/digits/x", "ops/__init__.py"]
    for rel in made + kept:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    subprocess.run(["make", "-s", "clean"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True)
    assert [rel for rel in made if (tmp_path / rel).exists()] == []
    assert [rel for rel in kept if not (tmp_path / rel).exists()] == []
    assert not (tmp_path / "ops" / "__pycache__").exists()


def test_lint_checks_the_format_and_the_types() -> None:
    out = subprocess.run(
        ["make", "-n", "lint"], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert re.search(r"ruff format --check \.$", out, flags=re.M)
    assert re.search(r"/mypy$", out, flags=re.M), "make lint runs mypy with pyproject.toml's files"
