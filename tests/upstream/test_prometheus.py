"""Canary for service/upstream/prometheus.py: ``observe_counts`` must leave a prometheus_client Histogram as the same observations through ``observe()`` would, in one process and in multiprocess mode (BentoML's workers run in it: PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Run in a fresh interpreter: prometheus_client picks its value class (in memory, or files in PROMETHEUS_MULTIPROC_DIR)
# once, when it is imported. The helper is run from its file, without importing the service.
SCRIPT = r"""
import json, runpy, sys
from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

observe_counts = runpy.run_path(sys.argv[1])["observe_counts"]
values = [0.1, 0.2, 0.6, 0.95, 2.0, 0.5, 0.9]
by_observe = Histogram("by_observe", "", ["model"], buckets=(0.5, 0.9))
by_counts = Histogram("by_counts", "", ["model"], buckets=(0.5, 0.9))
for value in values:
    by_observe.labels("m").observe(value)
counts = [sum(v <= 0.5 for v in values), sum(0.5 < v <= 0.9 for v in values), sum(v > 0.9 for v in values)]
observe_counts(by_counts.labels("m"), counts, sum(values))
if sys.argv[2] == "multiprocess":
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
else:
    registry = REGISTRY
samples = {}
for metric in registry.collect():
    for s in metric.samples:
        for prefix in ("by_observe", "by_counts"):
            if s.name.startswith(prefix) and not s.name.endswith("_created"):
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "pid")
                samples.setdefault(prefix, {})[s.name[len(prefix):] + "{" + labels + "}"] = round(s.value, 9)
print(json.dumps(samples))
"""


@pytest.mark.parametrize("mode", ["one-process", "multiprocess"])
def test_observe_counts_leaves_a_histogram_as_that_many_observe_calls_would(mode, tmp_path):
    """observe_counts writes prometheus_client's internals (``Histogram._buckets``: non-cumulative counts, one value
    per bucket; ``._sum``), written for prometheus_client 0.26.0.

    If this fails, prometheus_client keeps a histogram's state otherwise: fix observe_counts (or call observe() once
    per row). It can go once prometheus_client can observe a value n times in one call."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    if mode == "one-process":
        env.pop("PROMETHEUS_MULTIPROC_DIR")
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO / "service/upstream/prometheus.py"), mode],
                         capture_output=True, text=True, env=env, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    samples = json.loads(out.stdout)
    assert samples["by_counts"] == samples["by_observe"]
    assert samples["by_counts"]["_count{model=m}"] == 7 and samples["by_counts"]["_bucket{le=0.9,model=m}"] == 5
    assert (mode == "multiprocess") == any(tmp_path.iterdir())  # the mode asked for is the one that ran
