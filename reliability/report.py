"""Shared bits of the reliability commands: the service's traffic settings, machine facts, saving results."""

from __future__ import annotations

import ast
import datetime as dt
import json
import os
import platform
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "reliability" / "results"


def traffic_config() -> dict:
    """The literal `traffic={...}` of `@bentoml.service(...)` in service/service.py (read without importing it)."""
    tree = ast.parse((REPO / "service" / "service.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "service":
            for kw in node.keywords:
                if kw.arg == "traffic":
                    return ast.literal_eval(kw.value)
    return {}


def bentoml_config() -> dict:
    """What BENTOML_CONFIG / BENTOML_CONFIG_OPTIONS add to the service's own settings (usually nothing)."""
    return {k: os.environ[k] for k in ("BENTOML_CONFIG", "BENTOML_CONFIG_OPTIONS") if k in os.environ}


def machine() -> dict:
    import psutil

    return {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform()}


def save(name: str, data: dict, out: str | None = None) -> Path:
    """Write `data` (plus date, machine and traffic settings) as JSON; default reliability/results/<name>-<date>.json."""
    now = dt.datetime.now(dt.timezone.utc)
    data = {"command": name, "date": now.isoformat(timespec="seconds"), "machine": machine(),
            "service_traffic": traffic_config(), "bentoml_config": bentoml_config(), **data}
    path = Path(out) if out else RESULTS / f"{name}-{now:%Y%m%dT%H%M%SZ}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def finish(name: str, result: dict, out: str | None = None, hide: tuple[str, ...] = ()) -> int:
    """Save `result`, print it (without the bulky `hide` keys) and PASS/FAIL; the command's exit status."""
    path = save(name, result, out)
    print(json.dumps({k: v for k, v in result.items() if k not in hide}, indent=1))
    print(f"results: {path}\n{'PASS' if result['passed'] else 'FAIL'}")
    return 0 if result["passed"] else 1
