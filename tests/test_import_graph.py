"""No import circle among the rooms' modules (infra/, trainer/, serving/, ops/).

The graph is read from the source with `ast`, not by importing: every `import` and `from ... import` anywhere in a
module (at the top or inside a function) is an edge, because an import moved into a function to dodge a circle is
still a circle, one that only loads in the right order. `from package import name` is an edge to the submodule
`package.name` when there is one, else to `package`. Imports under `if TYPE_CHECKING:` are left out: they never run,
and the type checker reads circles among them fine. Relative imports are resolved against the importing module.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO, source_files

ROOMS = ("infra", "trainer", "serving", "ops")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for room in ROOMS:
        for path in source_files(room):
            found[module_name(path)] = path
    return found


def _imported(node: ast.AST, name: str, is_package: bool) -> list[str]:
    """The module names one import statement may name, as written (relative ones resolved against ``name``):
    for `from a import b`, both `a` and `a.b`, since `b` may be a module or a name in `a`."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        package = name.split(".") if is_package else name.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, *([base] if base else [])])
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return isinstance(test, ast.Name | ast.Attribute) and ast.unparse(test).endswith("TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement in ``tree`` except those under `if TYPE_CHECKING:` (their `else:` still counts)."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        children = node.orelse if _is_type_checking(node) else list(ast.iter_child_nodes(node))
        pending.extend(children)
    return found


def edges(known: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the rooms' modules it imports (directly, anywhere in its source that runs)."""
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), filename=str(path))):
            named = _imported(node, name, path.name == "__init__.py")
            if isinstance(node, ast.ImportFrom):
                base, members = named[0], named[1:]
                modules_named = [m for m in members if m in known]
                # `from a import b, c`: the submodules among b and c; `a` itself for the names that are not modules
                targets.update(modules_named)
                if len(modules_named) < len(members) and base in known:
                    targets.add(base)
            else:
                targets.update(m for m in named if m in known)
        targets.discard(name)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_rooms_have_no_import_circle() -> None:
    graph = edges(modules())
    assert "ops.aws.training.run" in graph, "the graph did not find ops' modules"
    found = cycles(graph)
    assert not found, "import circles (each group imports itself through the others): " + "; ".join(
        " <-> ".join(group) for group in found
    )


def test_the_check_finds_a_circle_hidden_in_a_function(tmp_path: Path) -> None:
    """The checker itself, on three small modules: `b` imports `a` inside a function, and `a` imports `b` for types
    only, which is no circle; once `a` imports `b` where it runs, relatively, it is one."""
    (tmp_path / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import b\n")
    (tmp_path / "b.py").write_text("def later():\n    from pkg.a import name\n")
    (tmp_path / "c.py").write_text("import pkg.a\n")
    known = {f"pkg.{n}": tmp_path / f"{n}.py" for n in "abc"}
    assert edges(known) == {"pkg.a": set(), "pkg.b": {"pkg.a"}, "pkg.c": {"pkg.a"}}
    assert cycles(edges(known)) == []
    (tmp_path / "a.py").write_text("from . import b\n")
    assert cycles(edges(known)) == [["pkg.a", "pkg.b"]]


ROOM_IMPORTS = {
    "infra": set(),
    "trainer": set(),
    "serving": set(),
    "ops": {"infra", "trainer.archive"},
}
"""What each room may import of the others. The trainer and the server ship as separate images with the artifact as
their only contract (docs/artifact.md), and infra runs under Pulumi; ops, on the host, reads infra's config and
engine helpers and packs model.tar.gz with the trainer's packer (standard library only)."""


def test_the_rooms_import_only_what_they_may_of_each_other() -> None:
    crossing = sorted(
        f"{name} imports {target}"
        for name, targets in edges(modules()).items()
        for target in targets
        if (room := name.split(".")[0]) != target.split(".")[0]
        and not any(target == allowed or target.startswith(allowed + ".") for allowed in ROOM_IMPORTS[room])
    )
    assert crossing == [], "a room imports another's module beyond ROOM_IMPORTS"
