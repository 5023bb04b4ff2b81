"""Where the container target keeps its engine: at the repository root, never inside the ops package, whose
files the tree-wide tests read (a dockerd data root holds whole images)."""

from __future__ import annotations

from ops.container import engine
from tests.conftest import REPO


def test_the_engine_lives_at_the_repository_root(monkeypatch) -> None:
    monkeypatch.delenv("DEEPCLOUD_ENGINE_DIR", raising=False)
    assert engine.REPO == REPO
    assert engine.engine_dir() == REPO / ".engine"


def test_deepcloud_engine_dir_moves_it(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("DEEPCLOUD_ENGINE_DIR", str(tmp_path / "e"))
    assert engine.engine_dir() == tmp_path / "e"
