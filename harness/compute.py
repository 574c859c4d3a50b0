"""The compute floor: ONNX Runtime images/s in-process (no HTTP, no JSON) on the served MNIST model."""

from __future__ import annotations

import time

import numpy as np

import artifacts
import artifacts.serving
from testkit.payloads import mnist_test
from service.inference import runtime
from service.settings import Settings

MODEL = artifacts.serving.default_dir(artifacts.MNIST)


def images_per_s(batch: int, threads: int, seconds: float = 2.0) -> float:
    """Best of three timed loops of `seconds`/3 each, one session run per iteration, after a warm-up."""
    settings = Settings(backend="onnx", device="cpu", threads=threads)
    model = runtime.load(MODEL, settings, "cpu")
    images = mnist_test(batch)[0]
    x = np.ascontiguousarray((images.astype(np.float32) / 255).reshape(-1, 1, 28, 28))
    for _ in range(20):
        model.predict(x)
    best = 0.0
    for _ in range(3):
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 3:
            model.predict(x)
            n += 1
        best = max(best, n * len(x) / elapsed)
    return round(best, 1)


def floor(batches=(1, 64, 256), threads=(1, 0), seconds: float = 2.0) -> list[dict]:
    """images/s for each batch size and intra-op thread count (0 = ONNX Runtime's default: one per core)."""
    return [{"batch": b, "threads": t, "images_per_s": images_per_s(b, t, seconds)} for b in batches for t in threads]


if __name__ == "__main__":
    for row in floor(seconds=0.3):
        print(row)
