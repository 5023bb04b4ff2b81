"""docs/aws-behaviours.md stays true to the tree: every test and file it names exists."""

from __future__ import annotations

import re

from tests.infra.harness import REPO

DOC = REPO / "docs" / "aws-behaviours.md"


def test_every_test_the_table_names_exists() -> None:
    """`tests/x.py::name`, and `::other` after it in the same cell, which names another test of that file."""
    checked = 0
    for cell in DOC.read_text().split("|"):
        current = None
        for token in re.findall(r"`((?:tests/[\w/]+\.py)?(?:::\w+)?)`", cell):
            path, _, test = token.partition("::")
            current = path or current
            if test and current:
                source = (REPO / current).read_text()
                assert re.search(rf"^def {test}\b", source, flags=re.M), f"{current}::{test} does not exist"
                checked += 1
    assert checked > 30


def test_every_file_the_table_names_exists() -> None:
    for path in re.findall(r"`((?:infra|ops|tests)/[\w/.-]+?\.(?:py|toml))", DOC.read_text()):
        assert (REPO / path).is_file(), path
    for folder in re.findall(r"`((?:infra|tests)/[\w/-]+/)`", DOC.read_text()):
        assert (REPO / folder).is_dir(), folder


def test_the_rows_are_numbered_once() -> None:
    rows = re.findall(r"^\| ([A-Z]\d+) \|", DOC.read_text(), flags=re.M)
    assert len(rows) == len(set(rows))
