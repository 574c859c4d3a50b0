"""One loaded model version in a worker: its runner on the backend and device, its own adaptive batcher (when its model is batched), and what it is doing now.

``await version.predict(x)`` runs it (rows along axis 0). Each model call (a batch of requests, or one request of a
model that is not batched) is handed to ``observe(inputs, outputs, requests)`` once, for the metrics. A version
taken out of service (``retire()``) finishes what it holds and then releases its thread; ``probe`` is the prediction
a version must pass before it serves.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

import artifacts
from service.inference import runtime
from service.inference.batching import Batcher
from service.settings import Settings

log = logging.getLogger("bentoml.service.thermodigits")  # under "bentoml" so `bentoml serve` shows it

Observer = Callable[["Version", np.ndarray, np.ndarray, int], None]  # (version, inputs, outputs, requests) per call


@dataclass(eq=False)
class Version:
    """A model version loaded in this worker."""

    model: artifacts.Model
    loaded: runtime.LoadedModel
    batcher: Batcher | None = None
    inflight: int = 0
    retired: bool = False
    observers: list[Observer] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def version(self) -> str:
        return self.loaded.version

    @property
    def task(self) -> artifacts.Task:
        return self.model.task

    @property
    def metadata(self) -> dict[str, Any]:
        return self.loaded.metadata

    async def predict(self, x: np.ndarray) -> np.ndarray:
        self.inflight += 1
        try:
            if self.batcher is not None:
                return await self.batcher(x)
            y = self.loaded.predict(x)  # microseconds: no thread, no batching
            self._observe(x, y, 1)
            return y
        finally:
            self.inflight -= 1
            if self.retired and not self.inflight:
                self.close()

    def _observe(self, x: np.ndarray, y: np.ndarray, requests: int) -> None:
        for observe in self.observers:
            try:
                observe(self, x, y, requests)
            except Exception:  # a metric must never fail an answer
                log.exception("an observer of %s:%s failed", self.name, self.version)

    def retire(self) -> None:
        """Out of service: requests already on it finish, then its batcher's thread is released."""
        self.retired = True
        if not self.inflight:
            self.close()

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()

    def describe(self) -> dict[str, Any]:
        return self.loaded.describe()


def load(model: artifacts.Model, path: Path, settings: Settings, device: str,
         observers: list[Observer] | None = None) -> Version:
    """Verify and load the version in `path` (a store entry or a model folder) for `model`'s task; ArtifactError
    naming the file or spec at fault."""
    loaded = runtime.load(path, settings, device, model.task)
    version = Version(model, loaded, observers=list(observers or ()))
    if model.batched:
        version.batcher = Batcher(loaded.predict, settings.max_batch, f"{loaded.name}-{loaded.version[:6]}",
                                  observe=version._observe, gather_s=settings.batch_gather_ms / 1000)
    log.info("loaded %s:%s with %s on %s (%s)", loaded.name, loaded.version, loaded.backend, loaded.device,
             ", ".join(getattr(loaded.predict, "providers", [])))
    return version


# The probe each task's version must pass before it serves: finite answers of the right shape and range.
def _probe_input(task: artifacts.Task) -> np.ndarray:
    if task == artifacts.DIGITS:
        blank = np.zeros((1, 1, 28, 28), np.float32)
        stroke = blank.copy()
        stroke[0, 0, 4:24, 13:15] = 1.0  # a one
        return np.concatenate([blank, stroke])
    return np.array([[0.0], [35.7], [100.0]], dtype=np.float64)


def probe(version: Version) -> None:
    """Run the version on its task's probe input (a blank and a drawn digit; three readings); ArtifactError naming
    what is wrong when an answer is not finite, or not probabilities for a digit model."""
    task = version.task
    x = _probe_input(task)
    try:
        y = np.asarray(version.loaded.predict(x))
    except Exception as e:  # noqa: BLE001 - a version that cannot run its probe does not serve
        raise artifacts.ArtifactError(f"{version.name}:{version.version}: the probe prediction failed ({e})") from None
    where = f"{version.name}:{version.version}: the probe prediction"
    expected = (len(x), *task.output.shape[1:])
    if y.shape != expected:
        raise artifacts.ArtifactError(f"{where} has shape {list(y.shape)}, expected {list(expected)}")
    if not np.isfinite(y).all():
        raise artifacts.ArtifactError(f"{where} is not finite (NaN or infinity)")
    if task == artifacts.DIGITS:
        sums = y.sum(axis=1)
        if (y < 0).any() or (y > 1).any() or not np.allclose(sums, 1.0, atol=1e-3):
            raise artifacts.ArtifactError(f"{where} is not probabilities (values in [0, 1], each row summing to 1; "
                                          f"rows sum to {', '.join(f'{s:.4g}' for s in sums)})")
    elif not all(math.isfinite(v) and abs(v) < 1e6 for v in y.ravel()):
        raise artifacts.ArtifactError(f"{where} is out of range (|value| >= 1e6 degrees)")
