"""The import rules of docs/developing.md, checked on the source: which package may import which.

Imports inside ``if TYPE_CHECKING:`` are for annotations only and are not counted; imports
inside functions are (they run)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: Leaves: import nothing of the project but each other.
LEAVES = {"shared.contract", "shared.errors", "shared.settings", "shared.clock", "shared.backoff"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_imports(tree: ast.Module) -> set[str]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        is_type_checking = isinstance(node, ast.If) and (
            isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        )
        if is_type_checking:
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] in {"shared", "workers"}}


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for top in ("shared", "workers"):
        for path in sorted((REPO / top).rglob("*.py")):
            graph[_module_name(path)] = _runtime_imports(ast.parse(path.read_text(encoding="utf-8")))
    return graph


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def test_shared_never_imports_workers() -> None:
    bad = [
        (m, t)
        for m, targets in _graph().items()
        if m.startswith("shared")
        for t in targets
        if t.startswith("workers")
    ]
    assert bad == []


def test_nothing_on_the_hot_path_imports_the_tools() -> None:
    bad = [
        (m, t)
        for m, targets in _graph().items()
        if not m.startswith("shared.tools") and m.startswith("shared")
        for t in targets
        if t.startswith("shared.tools")
    ]
    assert bad == []


def test_leaves_import_only_leaves() -> None:
    graph = _graph()
    bad = [(m, t) for m in LEAVES for t in graph[m] if _package(t) not in LEAVES]
    assert bad == []


def test_transports_know_nothing_of_functions_registry_or_workers() -> None:
    forbidden = ("shared.registry", "shared.functions", "shared.credentials", "shared.runtime", "workers")
    bad = [
        (m, t)
        for m, targets in _graph().items()
        if m.startswith("shared.transports")
        for t in targets
        if t.startswith(forbidden)
    ]
    assert bad == []


def test_the_runtime_does_not_import_a_concrete_transport_or_the_registry() -> None:
    forbidden = (
        "shared.registry",
        "shared.transports.redis",
        "shared.transports.dapr",
        "shared.tools.cli",
        "workers",
    )
    bad = [
        (m, t)
        for m, targets in _graph().items()
        if m.startswith("shared.runtime")
        for t in targets
        if t.startswith(forbidden)
    ]
    assert bad == []


def test_no_import_cycles_between_packages() -> None:
    edges: dict[str, set[str]] = defaultdict(set)
    for module, targets in _graph().items():
        for target in targets:
            a, b = _package(module), _package(target)
            if a != b:
                edges[a].add(b)
    cycles = {frozenset({a, b}) for a in edges for b in edges[a] if a in edges.get(b, set())}
    assert cycles == set()
