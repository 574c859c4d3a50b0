"""One worker's loaded models, by registry name (artifacts.MODELS): ``await models.predict(name, x)`` runs one, through its adaptive batcher when the registry says it is batched."""

from __future__ import annotations

import logging
from pathlib import Path

import bentoml
import numpy as np

import artifacts
from service.inference import runtime
from service.inference.batching import Batcher
from service.settings import Settings

log = logging.getLogger("bentoml.service.thermodigits")  # under "bentoml" so `bentoml serve` shows it

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
batch_images = bentoml.metrics.Histogram(
    name="model_batch_images", documentation="Images per digit-model call (adaptive batching)",
    labelnames=["model"], buckets=BATCH_BUCKETS)
batch_requests = bentoml.metrics.Histogram(
    name="model_batch_requests", documentation="Requests sharing one digit-model call (adaptive batching)",
    labelnames=["model"], buckets=BATCH_BUCKETS)


def _observe(name: str, images: int, requests: int) -> None:
    batch_images.labels(model=name).observe(images)
    batch_requests.labels(model=name).observe(requests)


def check(paths: dict[str, Path], settings: Settings) -> None:
    """What a worker would fail on at start, checked without loading: the device, and every registry model's file
    and tensor spec; raises naming the model and what is wrong (so `bentoml serve` stops instead of restarting workers)."""
    runtime.select_device(settings.backend, settings.device)
    for m in artifacts.MODELS:
        try:
            runtime.verify(Path(paths[m.name]), settings.backend, m.task)
        except artifacts.ArtifactError as e:
            raise artifacts.ArtifactError(f"model {m.name} cannot be served: {e}") from None


class Models:
    """The registry's models loaded from their folders (`paths`: name -> folder), verified against their tasks."""

    def __init__(self, paths: dict[str, Path], settings: Settings):
        device = runtime.select_device(settings.backend, settings.device)
        self.loaded = {m.name: runtime.load(Path(paths[m.name]), settings, device, m.task) for m in artifacts.MODELS}
        for m in self.loaded.values():
            log.info("loaded %s:%s with %s on %s (%s)", m.name, m.version, m.backend, m.device,
                     ", ".join(getattr(m.predict, "providers", [])))
        # Requests for the same batched model share its calls (one batcher each).
        self.batchers = {m.name: Batcher(self.loaded[m.name].predict, settings.max_batch, m.name,
                                         observe=lambda images, requests, name=m.name: _observe(name, images, requests))
                         for m in artifacts.MODELS if m.batched}

    def get(self, name: str) -> runtime.LoadedModel | None:
        return self.loaded.get(name)

    def chosen(self, task: artifacts.Task, choice: str) -> runtime.LoadedModel:
        """The model that the `model` value `choice` of `task`'s endpoints names."""
        return self.loaded[artifacts.choices(task)[choice].name]

    async def predict(self, name: str, x: np.ndarray) -> np.ndarray:
        """Model `name` on `x` (rows along axis 0): batched models share calls with concurrent requests."""
        batcher = self.batchers.get(name)
        if batcher is not None:
            return await batcher(x)
        return self.loaded[name].predict(x)  # microseconds: no thread, no batching

    def describe(self) -> dict:
        """GET /metadata: each model's metadata.json plus backend, device and providers."""
        return {"models": {name: m.describe() for name, m in self.loaded.items()}}
