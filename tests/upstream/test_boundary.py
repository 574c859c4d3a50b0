"""Only service/upstream/ reaches into upstream internals: the rest of service/ imports no private module and touches none of the private names its patches use."""

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "service"
PRIVATE_MODULES = ("_bentoml_impl", "_bentoml_sdk", "bentoml._internal", "uvicorn.config", "uvicorn.protocols",
                   "uvicorn.server", "opentelemetry")
PRIVATE_NAMES = {"_start_asgi_task", "_local_call", "_srcfile", "__attrs_attrs__", "HTTP_PROTOCOLS", "LOOP_FACTORIES",
                 "_setup", "parse_request", "middlewares", "mime_type", "freeze", "set_threshold",
                 "logThreads", "logProcesses", "logMultiprocessing", "logAsyncioTasks"}
OUTSIDE = sorted(p for p in SERVICE.rglob("*.py") if "upstream" not in p.relative_to(SERVICE).parts)


def violations(path: Path, root: Path = SERVICE.parent) -> list[str]:
    """'file:line: what' for every private import or name in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        modules = []
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules = [node.module or ""]
        for module in modules:
            if module.startswith(PRIVATE_MODULES):
                found.append(f"{path.relative_to(root)}:{node.lineno}: imports {module}")
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE_NAMES:
            found.append(f"{path.relative_to(root)}:{node.lineno}: uses .{node.attr}")
    return found


def test_the_rule_sees_what_it_looks_for(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import uvicorn.config\nfrom _bentoml_sdk.method import APIMethod\nAPIMethod._local_call = 1\n")
    assert violations(sample, tmp_path) == ["sample.py:1: imports uvicorn.config",
                                            "sample.py:2: imports _bentoml_sdk.method", "sample.py:3: uses ._local_call"]


@pytest.mark.parametrize("path", OUTSIDE, ids=[str(p.relative_to(SERVICE)) for p in OUTSIDE])
def test_no_upstream_internals_outside_service_upstream(path):
    assert violations(path) == []
