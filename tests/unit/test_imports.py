"""The import graph of the installed packages (read from the source, nothing imported): no cycles
between modules — module-level, ``TYPE_CHECKING`` and function-level imports alike — nor between the
supervisor's rooms; the shared core (``bigbunny/``) imports nothing from the supervisor or the shards;
and an import inside a function is the one deliberate exception below, not a way around a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO

PACKAGES = {
    "bigbunny": REPO / "bigbunny",
    "bigbunny.supervisor": REPO / "supervisor",
    "bigbunny.shards": REPO / "shards",
}
# entry.main loads the daemon (and with it the server stack) only to run it: client commands stay fast
LAZY = {("bigbunny.supervisor.entry", "bigbunny.supervisor.daemon")}


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder)
            if pkg == "bigbunny" and rel.parts[0] in ("supervisor", "shards"):
                continue  # the symlinks to the folders above
            parts = [p for p in rel.with_suffix("").parts if p != "__init__"]
            mods[".".join([pkg, *parts])] = path
    return mods


MODULES = _modules()


def _targets(module: str, node: ast.Import | ast.ImportFrom, is_pkg: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_pkg else 0)]
        target = ".".join([*base, *([node.module] if node.module else [])])
    else:
        target = node.module or ""
    return [target, *(f"{target}.{a.name}" for a in node.names)]


def _edges() -> dict[str, dict[str, str]]:
    """module -> {imported module: 'module' | 'function'} (TYPE_CHECKING imports count as 'module')."""
    edges: dict[str, dict[str, str]] = {}
    for module, path in MODULES.items():
        found: dict[str, str] = {}

        def visit(node: ast.AST, where: str) -> None:
            for child in ast.iter_child_nodes(node):
                inner = "function" if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else where
                if isinstance(child, ast.Import | ast.ImportFrom):
                    for target in _targets(module, child, path.name == "__init__.py"):
                        if target in MODULES and target != module:
                            found.setdefault(target, where)
                visit(child, inner)

        visit(ast.parse(path.read_text()), "module")
        edges[module] = found
    return edges


EDGES = _edges()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def _room(module: str) -> str:
    """``bigbunny.supervisor.<room>`` for a module in a supervisor subpackage, else the module's package."""
    parts = module.split(".")
    if parts[:2] == ["bigbunny", "supervisor"] and len(parts) > 3:
        return ".".join(parts[:3])
    return module


def test_the_graph_is_read() -> None:
    assert "bigbunny.supervisor.entry" in MODULES and "bigbunny.shards.engine" in MODULES
    assert "bigbunny.supervisor.daemon" in EDGES["bigbunny.supervisor.entry"]


def test_no_module_imports_itself_back() -> None:
    graph = {m: set(targets) for m, targets in EDGES.items()}
    assert _cycles(graph) == []


def test_no_cycle_between_the_supervisor_rooms() -> None:
    graph: dict[str, set[str]] = {}
    for module, targets in EDGES.items():
        for target in targets:
            if _room(module) != _room(target):
                graph.setdefault(_room(module), set()).add(_room(target))
    assert _cycles(graph) == []


def test_function_level_imports_only_where_deliberate() -> None:
    lazy = {(m, t) for m, targets in EDGES.items() for t, where in targets.items() if where == "function"}
    assert lazy <= LAZY


def test_the_shared_core_does_not_import_the_processes() -> None:
    core = [m for m in EDGES if not m.startswith(("bigbunny.supervisor", "bigbunny.shards"))]
    assert [(m, t) for m in core for t in EDGES[m] if t.startswith(("bigbunny.supervisor", "bigbunny.shards"))] == []
