"""The layout: data flows one way, and no module imports itself in a circle.

Imports are read from the source with ``ast`` (every ``import`` statement,
at module level, in functions and under ``TYPE_CHECKING``), so a lazy or
typing-only import counts like any other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "metastore"

# The bottom of the flow: pure or database-level modules, below the store.
LOWER = {
    "metastore.db",
    "metastore.statements",
    "metastore.schema",
    "metastore.records",
    "metastore.writer",
    "metastore.reads",
    "metastore.batch",
    "metastore.outbox",
    "metastore.dicom",
    "metastore.dicomfile",
    "metastore.dburl",
    "metastore.dicomvalues",
    "metastore.quirks",
    "metastore.imageids",
    "metastore.matching",
    "metastore.errors",
    "metastore.names",
    "metastore.retry",
    "metastore.progress",
    "metastore.version",
}
# What the store may import: the layer below it, nothing else of ours.
STORE_MAY_IMPORT = LOWER - {"metastore.matching", "metastore.retry", "metastore.progress"}
# What sources (and the launch-file format) must never reach: the database and what writes.
WRITING = (
    "metastore.store",
    "metastore.db",
    "metastore.statements",
    "metastore.schema",
    "metastore.writer",
    "metastore.batch",
    "metastore.outbox",
    "metastore.ingest",
    "metastore.events",
)
ABOVE_EVERYTHING = ("metastore.cli", "metastore.service")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(source: str, name: str, known: set[str], *, is_package: bool = False) -> set[str]:
    """The metastore modules a module's source imports, anywhere in it."""
    found: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
    return {module for module in found if module == "metastore" or module.startswith("metastore.")}


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {
        name: imports(path.read_text(), name, known, is_package=path.name == "__init__.py") - {name}
        for name, path in found.items()
    }


def under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def violations(edges: dict[str, set[str]]) -> Iterator[str]:
    """Every import against the flow: sources -> ingest -> store + outbox -> readers."""
    for module, targets in sorted(edges.items()):
        for target in sorted(targets):
            if target == "metastore" and module != "metastore":
                yield f"{module} imports the package root (which imports everything)"
            reader_side = under(module, "metastore.sources") or (
                under(module, "metastore.launchfile") and module != "metastore.launchfile.export"
            )
            if reader_side and any(under(target, w) for w in WRITING):
                yield f"{module} (a source or the launch-file format) imports {target}"
            if module == "metastore.store" and target not in STORE_MAY_IMPORT:
                yield f"metastore.store imports {target}, which is not below it"
            if module in LOWER and target not in LOWER:
                yield f"{module} (below the store) imports {target}"
            if any(under(target, top) for top in ABOVE_EVERYTHING) and not any(
                under(module, top) for top in ABOVE_EVERYTHING
            ):
                yield f"{module} imports {target}, which sits above everything"


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_imports_follow_the_flow() -> None:
    assert list(violations(graph())) == []


def test_the_graph_sees_the_real_imports() -> None:
    edges = graph()
    assert "metastore.store" in edges["metastore.ingest.write"]
    assert "metastore.outbox" in edges["metastore.store"]
    assert "metastore.sources" in edges["metastore.sources.folder"]


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        # a function-level (lazy) import counts
        (
            "metastore.sources.x",
            "def f():\n    from metastore.store import MetaStore\n",
            "metastore.sources.x (a source or the launch-file format) imports metastore.store",
        ),
        # so does a typing-only one
        (
            "metastore.store",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import metastore.events\n",
            "metastore.store imports metastore.events, which is not below it",
        ),
        # a relative import resolves to its module
        (
            "metastore.records",
            "from .cli import main\n",
            "metastore.records (below the store) imports metastore.cli",
        ),
    ],
)
def test_a_wrong_import_is_reported(module: str, source: str, expected: str) -> None:
    known = set(modules())
    edges = {module: imports(source, module, known)}
    assert expected in list(violations(edges))


def test_a_cycle_is_reported() -> None:
    edges = {
        "metastore.a": {"metastore.b"},
        "metastore.b": {"metastore.c"},
        "metastore.c": {"metastore.a"},
    }
    assert cycles(edges) == [["metastore.a", "metastore.b", "metastore.c"]]


def test_no_module_passes_600_lines() -> None:
    long = {
        name: count
        for name, path in modules().items()
        if (count := len(path.read_text().splitlines())) > 600
    }
    assert long == {}
