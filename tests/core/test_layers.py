"""The core's layers import one way: registry → filters → routing → schedulers, each stage
readable alone. Filters see the service through ``filters.ServiceView``, never the balancer
module; no import cycle, type-only imports included, but the two known ones."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "lbclient"
STAGES = ("filters", "routing", "schedulers", "_config.py")
KNOWN_CYCLES = [
    {"lbclient._exceptions", "lbclient._instance"},
    {"lbclient._balancer", "lbclient._handle", "lbclient._listener"},
    {"lbclient._limits", "lbclient._retry"},
]
"""Type-only imports back: an error names the instance it concerns; a handle names the
service state it belongs to, and listeners receive handles (exporters read both); a call's
retry state and its admission ticket name each other."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """Modules ``path`` imports at module level, under ``TYPE_CHECKING`` included."""
    found = set()
    pending: list[ast.AST] = [ast.parse(path.read_text())]
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue  # an import inside a function runs when called, not at import
        pending.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else node.module)
    return {m for m in found if m in modules}


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(paths)
    return {name: imports(path, modules) - {name} for name, path in paths.items()}


def cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_no_stage_imports_the_balancer() -> None:
    edges = graph()
    offenders = {
        name: sorted(deps & {"lbclient._balancer", "lbclient.transport", "lbclient.grpc"})
        for name, deps in edges.items()
        if any(name.startswith(f"lbclient.{stage.removesuffix('.py')}") for stage in STAGES)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_core_has_no_import_cycle() -> None:
    edge = ("lbclient.testing", "lbclient.grpc", "lbclient.transport")  # the I/O edges
    core = {
        name: {d for d in deps if not d.startswith(edge)}
        for name, deps in graph().items()
        if not name.startswith(edge)
    }
    assert [c for c in cycles(core) if c not in KNOWN_CYCLES] == []
