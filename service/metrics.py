"""Per-version metrics in /metrics (BentoML's multiprocess Prometheus registry, through prometheus_client as BentoML asks: counted in every worker, summed at scrape): requests, latency and errors of each model version, its batches, and how a shadow version compares with the version that answered.

* ``model_requests_total{model, version, route, outcome}``: predictions, by how the version came to answer
  (``default``, ``canary``, ``pinned``: the request named it) and ``ok`` or ``error``.
* ``model_request_duration_seconds{model, version}``: from the data plane's call to the version's answer (its
  batch's wait included).
* ``model_batch_images{model, version}``, ``model_batch_requests{model, version}``: images and requests per call of
  a batched model.
* ``model_shadow_rows_total{model, version, shadow_version, outcome}``: rows of requests copied to the shadow:
  ``agree`` (the same digit; for the thermometer within ``AGREE_CELSIUS``), ``disagree``, ``failed`` (the shadow
  raised), ``skipped`` (no room for background work).
* ``model_shadow_duration_seconds{model, shadow_version}``: the shadow's time per copy.
* ``model_shadow_abs_difference_celsius{model, version, shadow_version}``: the largest |difference| of a copy's
  readings, thermometer models only.

* ``service_workers``, ``service_workers_ready``: the live workers of the replica, and those ready to serve (not
  draining); set by each worker every second (``report_worker``).

Series are labelled once per version and cached: a labelled child costs a dictionary lookup per request.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import numpy as np
import prometheus_client

import artifacts
from service.core.plane import DONE, FAILED, SKIPPED
from service.inference.versions import Version

AGREE_CELSIUS = 0.5  # a shadow's reading within this of the answer agrees
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
CELSIUS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 50)

requests_total = prometheus_client.Counter(
    "model_requests_total", "Predictions by model version, how it was chosen, and outcome",
    labelnames=["model", "version", "route", "outcome"])
request_seconds = prometheus_client.Histogram(
    "model_request_duration_seconds", "Seconds a model version took to answer (batching included)",
    labelnames=["model", "version"], buckets=SECONDS)
batch_images = prometheus_client.Histogram(
    "model_batch_images", "Images per digit-model call (adaptive batching)",
    labelnames=["model", "version"], buckets=BATCH_BUCKETS)
batch_requests = prometheus_client.Histogram(
    "model_batch_requests", "Requests sharing one digit-model call (adaptive batching)",
    labelnames=["model", "version"], buckets=BATCH_BUCKETS)
shadow_rows = prometheus_client.Counter(
    "model_shadow_rows_total", "Rows copied to a shadow version, by how its answer compared",
    labelnames=["model", "version", "shadow_version", "outcome"])
shadow_seconds = prometheus_client.Histogram(
    "model_shadow_duration_seconds", "Seconds a shadow version took per copied request",
    labelnames=["model", "shadow_version"], buckets=SECONDS)
shadow_difference = prometheus_client.Histogram(
    "model_shadow_abs_difference_celsius",
    "Largest |difference| in degrees Celsius between a thermometer shadow's readings and the answer's",
    labelnames=["model", "version", "shadow_version"], buckets=CELSIUS)


workers = prometheus_client.Gauge("service_workers", "Live workers of this replica", multiprocess_mode="livesum")
workers_ready = prometheus_client.Gauge("service_workers_ready", "Live workers of this replica ready to serve (not "
                                        "draining)", multiprocess_mode="livesum")
WORKER_REFRESH_S = 1.0


async def report_worker(ready: Callable[[], bool]) -> None:
    """Count this worker in service_workers, and in service_workers_ready while `ready()`, for as long as it runs."""
    workers.set(1)
    while True:
        workers_ready.set(1 if ready() else 0)
        await asyncio.sleep(WORKER_REFRESH_S)


class Series:
    """Labelled children, made once per label values."""

    def __init__(self) -> None:
        self.cache: dict[tuple, Any] = {}

    def get(self, metric: Any, *values: str) -> Any:
        key = (id(metric), *values)
        child = self.cache.get(key)
        if child is None:
            child = self.cache[key] = metric.labels(*values)
        return child


SERIES = Series()


def on_request(version: Version, route: str, ok: bool, seconds: float) -> None:
    SERIES.get(requests_total, version.name, version.version, route, "ok" if ok else "error").inc()
    if ok:
        SERIES.get(request_seconds, version.name, version.version).observe(seconds)


def on_batch(version: Version, x: np.ndarray, y: np.ndarray, requests: int) -> None:
    """A version's observer: the size of each call of a batched model."""
    if version.model.batched:
        SERIES.get(batch_images, version.name, version.version).observe(len(x))
        SERIES.get(batch_requests, version.name, version.version).observe(requests)


def on_shadow(answered: Version, shadow: Version, y: np.ndarray, out: np.ndarray | None, outcome: str,
              seconds: float) -> None:
    labels = (answered.name, answered.version, shadow.version)
    rows = len(y)
    if outcome in (SKIPPED, FAILED):
        SERIES.get(shadow_rows, *labels, outcome).inc(rows)
        return
    assert outcome == DONE and out is not None
    SERIES.get(shadow_seconds, answered.name, shadow.version).observe(seconds)
    if answered.task == artifacts.DIGITS:
        agree = int((y.argmax(axis=1) == out.argmax(axis=1)).sum())
    else:
        difference = np.abs(np.asarray(y, np.float64) - np.asarray(out, np.float64))
        SERIES.get(shadow_difference, *labels).observe(float(difference.max()))
        agree = int((difference <= AGREE_CELSIUS).sum())
    if agree:
        SERIES.get(shadow_rows, *labels, "agree").inc(agree)
    if rows - agree:
        SERIES.get(shadow_rows, *labels, "disagree").inc(rows - agree)
