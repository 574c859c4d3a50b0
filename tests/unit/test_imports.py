"""The layers of service/ (and no import circle in training/ or artifacts/ either): no circle (imports inside functions included), the core below every transport, and the gRPC glue free of HTTP.

The graph is read from the source (every ``import`` and ``from ... import`` anywhere in a module, resolved to the
project's modules), so an import hidden in a function counts like one at the top.
"""

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("service", "artifacts", "training")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")
            if "proto" not in p.parts}


def imports(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports, wherever the import stands."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in edges.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_the_checks_see_what_they_look_for():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert reachable({"a": {"b"}, "b": {"c"}}, "a") == {"b", "c"}


def test_no_import_circle_in_service_or_artifacts():
    assert cycles(graph()) == []


def test_the_function_level_imports_count():
    """An import inside a function is an edge too (the circle api/openapi <-> v2/schemas was hidden so)."""
    edges = graph()
    assert "service.core.plane" in edges["service.api.current"]  # a top-level import, for reference
    assert "service.core.plane" in edges["service.repository"]


@pytest.mark.parametrize("module", ["service.v2.grpc_service"])
def test_the_grpc_glue_reaches_no_http(module):
    reached = reachable(graph(), module)
    http = {m for m in reached if m.startswith("service.api") or m in ("service.v2.rest", "service.v2.schemas",
                                                                         "service.v2.repository_rest")}
    assert http == set(), f"{module} reaches HTTP glue: {sorted(http)}"
    source = (REPO / "service" / "v2" / "grpc_service.py").read_text()
    assert "starlette" not in source and "pydantic" not in source


def test_the_core_knows_no_transport():
    edges = graph()
    for module in (m for m in edges if m.startswith("service.core")):
        reached = reachable(edges, module)
        assert not {m for m in reached if m.startswith(("service.api", "service.v2", "service.upstream"))}, module
        text = modules()[module].read_text()
        assert not re.search(r"^\s*(import|from)\s+(starlette|grpc|pydantic)\b", text, re.M), module
