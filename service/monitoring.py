"""What the models answer, per model version, in /metrics: predictions by class, confidence, answers below the reference's confidence threshold, inputs outside the reference, and a drift score against the reference (artifacts/reference.py).

An observer of each model call (``Monitor.observe``: once per batch, not per row) counts, in BentoML's multiprocess
Prometheus registry (summed over workers at scrape):

* ``model_inputs_total{model, version}``: rows predicted.
* ``model_predictions_total{model, version, class}``: predicted digits (digit models).
* ``model_prediction_confidence{model, version}``: a histogram of the top probability (buckets: the reference's).
* ``model_low_confidence_total{model, version}``: answers below the reference's ``low_confidence``.
* ``model_inputs_outside_reference_total{model, version}``: images whose mean ink or frame is outside the reference;
  readings outside the range the thermometer was fit to.

and keeps, per worker, the last ``window`` answers of each version; every ``REFRESH_S`` the worker sets

* ``model_prediction_drift{model, version}``: digits: the population stability index of the window's predicted
  digits against the reference's; thermometers: the Kolmogorov-Smirnov statistic of the window's readings against
  the readings it was fit to; absent until a worker's window is full, NaN once the version is out of service. Each worker scores its own share of the traffic; /metrics shows the largest over the
  live workers (multiprocess mode ``livemax``), and a Prometheus recording rule computes the PSI over every worker
  and replica from ``model_predictions_total`` (deploy/prometheus/rules.yml).
* ``model_drift_threshold{model, version}``, ``model_reference_class_share{model, version, class}``: the
  reference's, for the alert and the recording rule.

A version without a reference (trained before references existed and not given one) is counted in
``model_inputs_total`` only. Nothing here may fail an answer: ``versions.Version`` calls observers inside a guard.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import prometheus_client

import artifacts
from artifacts import reference as ref
from service.inference.versions import Version
from service.upstream.prometheus import observe_counts

log = logging.getLogger("bentoml.service.thermodigits")

REFRESH_S = 1.0
SMALL = 16  # up to this many readings, a model call's statistics are counted without numpy
CLASSES = [str(c) for c in range(10)]

inputs_total = prometheus_client.Counter(
    "model_inputs_total", "Rows (images, readings) a model version predicted", ["model", "version"])
predictions_total = prometheus_client.Counter(
    "model_predictions_total", "Predicted digits by class", ["model", "version", "class"])
confidence = prometheus_client.Histogram(
    "model_prediction_confidence", "Probability of the predicted digit", ["model", "version"],
    buckets=ref.CONFIDENCE_EDGES[1:-1] + (1.0, math.inf))
low_confidence_total = prometheus_client.Counter(
    "model_low_confidence_total", "Answers below the reference's low-confidence threshold", ["model", "version"])
outside_total = prometheus_client.Counter(
    "model_inputs_outside_reference_total", "Inputs outside the reference: images whose ink or frame is not "
    "MNIST-like, readings outside the training range", ["model", "version"])
drift = prometheus_client.Gauge(
    "model_prediction_drift", "Drift score over the last answers against the reference (digits: PSI of the predicted "
    "classes; thermometers: Kolmogorov-Smirnov statistic of the readings); the largest over live workers",
    ["model", "version"], multiprocess_mode="livemax")
drift_threshold = prometheus_client.Gauge(
    "model_drift_threshold", "The drift score above which the version's traffic is not like its validation data",
    ["model", "version"], multiprocess_mode="livemax")
class_share = prometheus_client.Gauge(
    "model_reference_class_share", "Share of each digit among the version's answers on its validation data",
    ["model", "version", "class"], multiprocess_mode="livemax")


@dataclass
class Window:
    """The last `size` values of one version in this worker (a ring)."""

    size: int
    dtype: Any
    values: np.ndarray = field(init=False)
    filled: int = 0
    at: int = 0

    def __post_init__(self) -> None:
        self.values = np.zeros(self.size, self.dtype)

    def add(self, new: np.ndarray) -> None:
        new = new[-self.size:]
        n = len(new)
        first = min(n, self.size - self.at)
        self.values[self.at:self.at + first] = new[:first]
        self.values[:n - first] = new[first:]
        self.at = (self.at + n) % self.size
        self.filled = min(self.size, self.filled + n)

    def add_one(self, value: Any) -> None:
        self.values[self.at] = value
        self.at = (self.at + 1) % self.size
        self.filled = min(self.size, self.filled + 1)

    def current(self) -> np.ndarray:
        return self.values[:self.filled] if self.filled < self.size else self.values


class Watched:
    """One version's series (labelled once) and window."""

    def __init__(self, version: Version):
        self.name, self.tag = version.name, version.version
        self.reference = version.metadata.get("reference")
        self.digits = version.task == artifacts.DIGITS
        labels = (self.name, self.tag)
        self.inputs = inputs_total.labels(*labels)
        self.window: Window | None = None
        if not self.reference:
            return
        thresholds = self.reference["thresholds"]
        self.window = Window(int(thresholds["window"]), np.int8 if self.digits else np.float64)
        self.labels = labels  # the drift series is made at the first score (a NaN would poison livemax's max)
        drift_threshold.labels(*labels).set(float(thresholds["drift"]))
        self.outside = outside_total.labels(*labels)
        if self.digits:
            self.classes = [predictions_total.labels(*labels, c) for c in CLASSES]
            self.confidence = confidence.labels(*labels)
            self.low = low_confidence_total.labels(*labels)
            self.low_threshold = float(thresholds["low_confidence"])
            self.edges = np.asarray(ref.CONFIDENCE_EDGES[1:-1])
            self.ink = self.reference["inputs"]["ink"]
            self.frame = float(self.reference["inputs"]["frame"])
            self.expected = np.asarray(self.reference["classes"], float)
            for c, share in zip(CLASSES, self.reference["classes"]):
                class_share.labels(*labels, c).set(share)
        else:
            self.low_range, self.high_range = self.reference["range"]
            self.readings = np.asarray(self.reference["readings"], float)

    def observe(self, x: np.ndarray, y: np.ndarray) -> None:
        rows = len(x)
        self.inputs.inc(rows)
        if self.window is None:
            return
        if self.digits and rows == 1:  # one image (a /digit request alone in its batch): scalars, no arrays
            return self.observe_one(x, y[0])
        if self.digits:
            predicted = y.argmax(axis=1)
            top = y.max(axis=1)
            for c, n in enumerate(np.bincount(predicted, minlength=10)):
                if n:
                    self.classes[c].inc(int(n))
            observe_counts(self.confidence, np.bincount(np.searchsorted(self.edges, top, side="left"),
                                                        minlength=len(self.edges) + 2)[:len(self.edges) + 2],
                           float(top.sum()))
            low = int((top < self.low_threshold).sum())
            if low:
                self.low.inc(low)
            ink, frame = ref.image_statistics(x)
            outside = int(((ink < self.ink[0]) | (ink > self.ink[1]) | (frame > self.frame)).sum())
            self.window.add(predicted.astype(np.int8))
        elif rows <= SMALL:  # a request's few readings: Python's own numbers cost less than numpy's calls
            low, high, outside = self.low_range, self.high_range, 0
            for value in x.ravel().tolist():
                outside += not low <= value <= high
                self.window.add_one(value)
        else:
            readings = x.reshape(-1)
            outside = int(((readings < self.low_range) | (readings > self.high_range)).sum())
            self.window.add(readings)
        if outside:
            self.outside.inc(outside)

    def observe_one(self, x: np.ndarray, probabilities: np.ndarray) -> None:
        predicted = int(probabilities.argmax())
        top = float(probabilities[predicted])
        self.classes[predicted].inc(1)
        self.confidence.observe(top)
        if top < self.low_threshold:
            self.low.inc(1)
        ink, frame = ref.image_statistics(x)
        if not self.ink[0] <= ink[0] <= self.ink[1] or frame[0] > self.frame:
            self.outside.inc(1)
        self.window.add_one(predicted)

    def score(self) -> float | None:
        """The drift of this worker's window; None until the window is full (a partial one is noise)."""
        if self.window is None or self.window.filled < self.window.size:
            return None
        if self.digits:
            return ref.psi(ref.shares(np.bincount(self.window.current(), minlength=10)), self.expected)
        return ref.ks(self.window.current(), self.readings)


class Monitor:
    """The prediction statistics of every version this worker serves."""

    def __init__(self) -> None:
        self.watched: dict[Version, Watched] = {}  # until forget(): a version out of service

    def observe(self, version: Version, x: np.ndarray, y: np.ndarray, requests: int) -> None:
        """A version's observer (service/inference/versions.py): one model call."""
        watched = self.watched.get(version)
        if watched is None:
            watched = self.watched[version] = Watched(version)
        watched.observe(x, y)

    def forget(self, version: Version) -> None:
        """The version is out of service: its drift score no longer says anything (NaN: no alert compares true)."""
        watched = self.watched.pop(version, None)
        if watched is not None and watched.window is not None and watched.score() is not None:
            drift.labels(*watched.labels).set(math.nan)

    def refresh(self) -> None:
        for watched in self.watched.values():
            score = watched.score()
            if score is not None:
                drift.labels(*watched.labels).set(score)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                self.refresh()
            except Exception:
                log.exception("the drift scores were not refreshed")
