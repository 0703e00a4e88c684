"""No import cycles among cachelab's modules: the graph of their module-level imports (read with `ast`, nothing
imported; imports inside functions and under `if TYPE_CHECKING:` are not edges) has no strongly connected
component of more than one module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cachelab"

#: Cycles that exist today, each as its sorted modules; remove one here when it is opened (the strict xfail below
#: then says so). Nothing may join them and no new one may appear.
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def module_names(package: Path = PACKAGE) -> dict[str, Path]:
    """{"cachelab.engine.executor": path, "cachelab.engine": path of its __init__.py, ...}"""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def module_level(body: list[ast.stmt]):
    """The import statements a module runs when it is imported (not those in functions or classes, nor those
    under `if TYPE_CHECKING:`)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                    or isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING"):
                yield from module_level(node.body)
            yield from module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *[handler.body for handler in node.handlers]):
                yield from module_level(block)
        elif isinstance(node, ast.With):
            yield from module_level(node.body)


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The cachelab modules that importing `name` imports directly: `from . import x` is the module `x` where
    there is one (else the package), `from .a import b` is `a` (and `a.b` where that is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()

    def longest(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    for node in module_level(ast.parse(path.read_text(), filename=str(path)).body):
        if isinstance(node, ast.Import):
            found |= {longest(alias.name) for alias in node.names}
            continue
        if node.level:
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            base = f"{base}.{node.module}" if node.module else base
        else:
            base = node.module or ""
        for alias in node.names:
            found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else longest(base))
    return {module for module in found if module is not None and module != name}


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imported(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """The strongly connected components of more than one module (Tarjan), each as its sorted modules."""
    index, low, stack, on_stack, found = {}, {}, [], set(), set()

    def visit(node: str) -> None:  # cachelab's graph is shallow enough for recursion
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
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
                found.add(tuple(sorted(component)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_reads_relative_imports():
    graph = import_graph()
    assert "cachelab.policies.registry" in graph["cachelab.policies"]  # from .registry import make_policy, ...
    assert "cachelab.policies.base" in graph["cachelab.policies.registry"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {("a", "b", "c")}


def test_no_new_import_cycles():
    new = [cycle for cycle in cycles(import_graph()) if not any(set(cycle) <= set(known) for known in KNOWN_CYCLES)]
    assert not new, f"import cycles among cachelab's modules: {'; '.join(' <-> '.join(cycle) for cycle in new)}"


@pytest.mark.xfail(bool(KNOWN_CYCLES), strict=True, reason=f"known cycles: {sorted(KNOWN_CYCLES)}")
def test_no_import_cycles():
    assert not cycles(import_graph())
