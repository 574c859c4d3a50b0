"""The digit model behind BentoML's own adaptive batching: a `batchable=True` API that the typed /digit endpoint calls.

A batchable API takes exactly one array argument and is its own HTTP endpoint, so the typed endpoint
(`pixels` and `max_value`) reaches it through the service's in-process HTTP proxy (`self.to_async`).
`python -m harness.bentoml_batching` measures this against the real service (service/inference/batching.py).
"""

from __future__ import annotations

import bentoml
import numpy as np

import artifacts
import artifacts.serving
from service.inference import runtime
from service.api.schemas import DigitPrediction, DigitRequest, to_batch
from service.settings import Settings


@bentoml.service(traffic={"timeout": 30})
class BatchableDigits:
    def __init__(self) -> None:
        self.mnist = runtime.load(artifacts.serving.default_dir(artifacts.MNIST), Settings(), "cpu")

    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=20)
    def classify(self, images: np.ndarray) -> np.ndarray:
        return self.mnist.predict(images.astype(np.float32))

    @bentoml.api(route="/digit", input_spec=DigitRequest)
    async def digit(self, pixels, max_value: float = 255) -> DigitPrediction:
        p = (await self.to_async.classify(to_batch(pixels, max_value)))[0]
        return DigitPrediction(digit=int(p.argmax()), confidence=float(p.max()), probabilities=p.tolist())
