"""Results files: every run's figures as dated JSON with the machine, the versions and the service's settings (`python -m harness.report` re-renders docs/benchmarks.md).

    .venv/bin/python -m harness.report [harness/results/bench-<date>.json] [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "harness" / "results"
PACKAGES = ("bentoml", "onnxruntime", "uvicorn", "uvloop", "httptools", "starlette", "pydantic", "numpy", "pillow")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    try:
        out["wrk"] = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("Copyright")[0].strip()
    except OSError:
        out["wrk"] = "not installed"
    return out


def cpu_steal_s() -> float | None:
    """Seconds of CPU time the hypervisor has taken from this machine since boot (None where not reported)."""
    return getattr(psutil.cpu_times(), "steal", None)


def machine() -> dict:
    """What the figures were measured on: CPU, memory, load, kernel, the repository's commit, and versions."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    steal = cpu_steal_s()
    uptime = dt.datetime.now().timestamp() - psutil.boot_time()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "cpu_steal_since_boot": None if steal is None else
        {"seconds": round(steal, 1), "share": round(steal / max(uptime * (os.cpu_count() or 1), 1e-9), 4)},
        "git": git("rev-parse", "--short", "HEAD") + ("+uncommitted service/ changes" if git("status", "--porcelain", "service") else ""),
        "versions": versions(),
    }


def service_settings(env: dict[str, str] | None = None, workers: int | None = None, bentoml_config: str = "",
                     url: str | None = None) -> dict:
    """The service's settings as its workers read them (service.settings.Settings.from_env over this environment
    plus `env`), the worker count (`workers`, pinned; None: the service's default here), and what was changed from the
    defaults for this run (`--env`, `--bentoml-config`)."""
    from service.cpus import default_workers
    from service.settings import Settings

    merged = {**os.environ, **(env or {})}
    out = {"settings": Settings.from_env(merged).shown(), "workers": default_workers() if workers is None else workers,
           "workers_pinned": workers is not None, "env": dict(env or {}), "bentoml_config": bentoml_config,
           "bentoml_config_env": {k: merged[k] for k in ("BENTOML_CONFIG", "BENTOML_CONFIG_OPTIONS") if k in merged}}
    if url:
        out["note"] = f"a server already running at {url}: the settings of this environment, not necessarily its own"
    return out


def stamp(now: dt.datetime | None = None) -> str:
    return f"{(now or dt.datetime.now(dt.timezone.utc)):%Y%m%dT%H%M%SZ}"


def save(name: str, data: dict, out: str | Path | None = None, service: dict | None = None) -> Path:
    """Write `data` with the date, the machine and the service's settings as JSON (default harness/results/<name>-<date>.json)."""
    now = dt.datetime.now(dt.timezone.utc)
    data = {"command": name, "argv": sys.argv[1:], "date": now.isoformat(timespec="seconds"), "machine": machine(),
            "service": service if service is not None else service_settings(), **data}
    path = Path(out) if out else RESULTS / f"{name}-{stamp(now)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def finish(name: str, result: dict, out: str | Path | None = None, hide: tuple[str, ...] = (),
           service: dict | None = None) -> int:
    """Save `result`, print it (without the bulky `hide` keys) and PASS/FAIL; returns the command's exit status."""
    path = save(name, result, out, service)
    print(json.dumps({k: v for k, v in result.items() if k not in hide}, indent=1))
    failed = [k for k, ok in result.get("checks", {}).items() if not ok]
    print(f"results: {path}\n{'PASS' if result['passed'] else 'FAIL' + (': ' + '; '.join(failed) if failed else '')}")
    return 0 if result["passed"] else 1


def runs_of(name: str) -> list[Path]:
    """harness/results/<name>-<date>.json, oldest first (bench-workers-<date> is not a run of bench)."""
    return sorted(p for p in RESULTS.glob(f"{name}-*.json") if p.name[len(name) + 1:][:1].isdigit())


def latest(name: str) -> Path:
    runs = runs_of(name)
    if not runs:
        raise SystemExit(f"no {RESULTS}/{name}-<date>.json")
    return runs[-1]


def newest(name: str) -> dict | None:
    """The newest harness/results/<name>-<date>.json, read (None: there is none)."""
    runs = runs_of(name)
    return json.loads(runs[-1].read_text()) if runs else None


def render_all(markdown: Path, bench: Path | None = None, peers: Path | None = None, workers: Path | None = None) -> None:
    """docs/benchmarks.md from a bench run, a peers run and a worker-count run (each default: the newest)."""
    from harness import render

    render.write(json.loads((bench or latest("bench")).read_text()), markdown,
                 json.loads(peers.read_text()) if peers else newest("peers"),
                 json.loads(workers.read_text()) if workers else newest("bench-workers"))


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", nargs="?", type=Path, help="a bench results file (default: the newest bench-*.json)")
    ap.add_argument("--peers", type=Path, help="a peers results file (default: the newest peers-*.json, if any)")
    ap.add_argument("--workers", type=Path, help="a worker-count results file (default: the newest bench-workers-*.json)")
    ap.add_argument("--markdown", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = ap.parse_args(argv)
    render_all(args.markdown, args.source, args.peers, args.workers)
    print(f"wrote {args.markdown} (and its plot)")


if __name__ == "__main__":
    main()
