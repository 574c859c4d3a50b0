"""What the prediction statistics (service/monitoring.py) cost per model call, in process: µs per /temperature request, per /digit image and per /digits batch of 64 and 1,024 images, beside the CPU a served request costs.

    python -m harness.stats_cost                    # 20,000 calls each, 5 repeats; the median
    python -m harness.stats_cost --calls 2000       # a quick look

Each case times ``Monitor.observe`` on the version's real inputs and outputs (the committed default versions'
reference, their model's answers), in Prometheus's multiprocess mode as a worker runs it (a temporary
PROMETHEUS_MULTIPROC_DIR), the version's series already made (as after a worker's first request). The per-request
CPU it is compared with is the service's own figure, server CPU per answered request in `harness.bench`'s matrix
(docs/benchmarks.md): pass it with --request-cpu-us NAME=US, or the command reports µs only. Fails when a case given
a request's CPU costs more than 3 % of it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="stats-cost-prom-"))  # before prometheus

import numpy as np  # noqa: E402

import artifacts  # noqa: E402
import artifacts.serving  # noqa: E402
from harness.report import finish  # noqa: E402
from service.inference import versions  # noqa: E402
from service.monitoring import Monitor  # noqa: E402
from service.settings import Settings  # noqa: E402
from testkit.payloads import mnist_test  # noqa: E402


def version(name: str) -> versions.Version:
    return versions.load(artifacts.model(name), artifacts.serving.default_dir(name), Settings(), "cpu")


def cases() -> dict[str, tuple[versions.Version, np.ndarray]]:
    linear, mnist = version(artifacts.TEMPERATURE_LINEAR), version(artifacts.MNIST)
    images = (mnist_test(1024)[0].astype(np.float64) / 255).astype(np.float32).reshape(-1, 1, 28, 28)
    return {"temperature (2 readings)": (linear, np.array([[35.7], [55.9]])),
            "digit (1 image)": (mnist, images[:1]),
            "digits (64 images)": (mnist, images[:64]),
            "digits (1,024 images)": (mnist, images)}


def time_observe(monitor: Monitor, v: versions.Version, x: np.ndarray, calls: int) -> float:
    """µs per observe() call of `v` on `x` and its real outputs."""
    y = v.loaded.predict(x)
    monitor.observe(v, x, y, 1)  # the series are made once per version, at its first call
    started = time.perf_counter()
    for _ in range(calls):
        monitor.observe(v, x, y, 1)
    return (time.perf_counter() - started) / calls * 1e6


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--request-cpu-us", action="append", default=[], metavar="CASE=US",
                    help="a served request's CPU for a case (its name's first word: temperature, digit, digits)")
    ap.add_argument("--out", help="results file (default harness/results/stats_cost-<date>.json)")
    args = ap.parse_args(argv)
    request_cpu = {k: float(v) for k, v in (item.split("=", 1) for item in args.request_cpu_us)}
    monitor = Monitor()
    rows = {}
    for name, (v, x) in cases().items():
        calls = max(1, args.calls // max(1, len(x) // 16))
        runs = [time_observe(monitor, v, x, calls) for _ in range(args.repeats)]
        us = statistics.median(runs)
        row = {"us_per_call": round(us, 2), "us_per_row": round(us / len(x), 3), "rows": len(x), "calls": calls,
               "runs_us": [round(r, 2) for r in runs]}
        cpu = request_cpu.get(name.split()[0])
        if cpu:
            row["share_of_request_cpu"] = round(us / cpu, 4)
        rows[name] = row
        print(f"{name:24s} {us:8.2f} µs per call, {us / len(x):7.3f} µs per row"
              + (f", {100 * us / cpu:.1f} % of a request's {cpu:g} µs of CPU" if cpu else ""), flush=True)
    checks = {f"{name}: at most 3 % of a request's CPU": row["share_of_request_cpu"] <= 0.03
              for name, row in rows.items() if "share_of_request_cpu" in row}
    sys.exit(finish("stats_cost", {"command": "python -m harness.stats_cost" + "".join(f" {a}" for a in sys.argv[1:]),
                                   "cases": rows, "checks": checks, "passed": all(checks.values())}, args.out))


if __name__ == "__main__":
    main()
