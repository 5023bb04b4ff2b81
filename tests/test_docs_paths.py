"""The docs name files, folders and tests of this repository: every one they name exists, so a move that forgets a
doc fails here rather than misleading a reader."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO, source_files

ROOTS = ("infra", "trainer", "serving", "ops", "tests", "docs", "bench", "scripts", "examples", "requirements")
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md"), *REPO.glob("*/README.md")])
CODE = sorted(
    [
        *source_files("infra", "trainer", "serving", "ops", "bench"),
        *(REPO / "scripts").iterdir(),
        *REPO.glob("*/Dockerfile"),
        REPO / ".dockerignore",
        REPO / ".ci" / "run",
        REPO / "Makefile",
    ]
)
ELSEWHERE = {
    "examples/mnist_mlp.py": "keras-team/keras's, which trainer/model.py cites",
    "examples/vision/mnist_convnet.py": "keras-team/keras-io's, which trainer/model.py cites",
    "docs/protocol/extension_binary_data.md": "triton-inference-server/server's, which serving/oip.py cites",
}
"""Paths in other repositories that a comment cites by name."""
_TOKEN = re.compile(r"`([^`\s]+)`")
_PATH = re.compile(rf"^(?:{'|'.join(ROOTS)})/[\w./-]*(?:::[\w\[\]-]+)?$")
_BARE = re.compile(rf"(?<![\w/.-])((?:{'|'.join(ROOTS)})/[\w./-]*\w\.(?:py|md|toml|yaml|yml|txt|json|sh))(?![\w/-]|::)")
"""A path written without backticks: in a comment, in parentheses, or as a Markdown link's target."""


def named_paths(text: str) -> set[str]:
    """Backticked repository paths, optionally with a ``::test_name``; globs and placeholders are not paths."""
    found = set()
    text = re.sub(r"\[[^\]]*\]\(https?://[^)]*\)", "", text)  # another repository's paths, in a link to it
    for token in _TOKEN.findall(text):
        token = token.rstrip(".,:;)")
        if _PATH.match(token) and not re.search(r"[*<>{}]", token):
            found.add(token)
    found.update(_BARE.findall(text))
    return found


def _missing(doc: Path) -> list[str]:
    missing = []
    for token in sorted(named_paths(doc.read_text().replace("``", "`")) - ELSEWHERE.keys()):
        path, _, test = token.partition("::")
        target = REPO / path
        if not target.exists():
            missing.append(token)
        elif test and target.is_file():
            name = test.split("[")[0]
            if not re.search(
                rf"^\s*(?:async )?def {re.escape(name)}\(|^class {re.escape(name)}\b", target.read_text(), re.M
            ):
                missing.append(token)
    return missing


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_path_a_doc_names_exists(doc: Path) -> None:
    assert _missing(doc) == [], f"{doc.relative_to(REPO)} names paths or tests that do not exist"


@pytest.mark.parametrize("module", CODE, ids=lambda p: str(p.relative_to(REPO)))
def test_every_path_a_comment_or_docstring_names_exists(module: Path) -> None:
    assert _missing(module) == [], f"{module.relative_to(REPO)} names paths or tests that do not exist"


def test_the_check_finds_a_path_that_does_not_exist() -> None:
    text = "see `serving/layout.py`, `ops/x.py::test_a`, `/opt/ml/model`, `ops/*.py` and [`ops/y.py`](https://x.org/y)"
    assert named_paths(text) == {"serving/layout.py", "ops/x.py::test_a"}
    assert named_paths("# a comment (ops/a.py), [a link](docs/b.md) and /opt/ml/ops/c.py") == {"ops/a.py", "docs/b.md"}
