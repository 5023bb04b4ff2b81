"""The rooms stay readable: no module over 400 lines and no function over 60, outside tests and bench. A module that
grows past these is split into modules named for what they do, as the rest were."""

from __future__ import annotations

import ast

from tests.conftest import REPO, source_files

ROOMS = ("infra", "trainer", "serving", "ops")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules():
    return source_files(*ROOMS)


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(p.relative_to(REPO)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}, "modules over 400 lines: split them"


def test_no_function_is_over_60_lines() -> None:
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(REPO)}:{node.lineno} {node.name}"] = lines
    assert long == {}, "functions over 60 lines: split them into named steps"
