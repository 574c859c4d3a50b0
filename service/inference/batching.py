"""Adaptive batching in process: concurrent requests for one model share its calls, and a lone request never waits.

Why not BentoML's ``batchable=True``: a batchable API takes exactly one argument and is its own HTTP
endpoint; our typed endpoints (``/digit`` with ``max_value``, ``/digits``, ``/digit/image``, the v2
protocol) reach it only through BentoML's in-process HTTP proxy, which serialises every image to JSON
and back and runs the whole middleware stack a second time (docs/decisions/batching.md).

How it batches (no timer, no ``max_latency``): a call puts its images in a queue and awaits them. If
the model is idle, a drain task starts at once; it runs on the event loop's next turn, so the calls
parsed in the same turn join the first batch. While a batch runs in the model's thread (ONNX Runtime
and torch release the GIL), the event loop keeps parsing requests, and those queue for the next batch.
So at concurrency 1 every batch holds one request and costs one thread hop; under load batches grow
by themselves up to ``max_batch`` images, which bounds the latency a batch adds. A request larger
than ``max_batch`` runs alone, whole.
"""

from __future__ import annotations

import asyncio
import collections
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

Observer = Callable[[np.ndarray, np.ndarray, int], None]  # (inputs, outputs, requests) of each model call


class Batcher:
    """Coalesce concurrent ``await batcher(x)`` calls (x: N images along axis 0) into calls of ``predict``."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_batch: int, name: str = "model",
                 observe: Observer | None = None):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.predict = predict
        self.max_batch = max_batch
        self.observe = observe
        # One thread: calls run one after another (the model's own intra-op threads parallelise each call).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{name}")
        self._queue: collections.deque[tuple[np.ndarray, asyncio.Future]] = collections.deque()
        self._drain: asyncio.Task | None = None

    async def __call__(self, x: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((x, future))
        if self._drain is None:
            self._drain = loop.create_task(self._run())
        return await future

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        """The queue's head: as many calls as fit in max_batch images (always at least one)."""
        taken = [self._queue.popleft()]
        size = len(taken[0][0])
        while self._queue and size + len(self._queue[0][0]) <= self.max_batch:
            taken.append(self._queue.popleft())
            size += len(taken[-1][0])
        return [(x, f) for x, f in taken if not f.cancelled()]  # callers gone (deadline, disconnect)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                taken = self._take()
                if not taken:
                    continue
                batch = taken[0][0] if len(taken) == 1 else np.concatenate([x for x, _ in taken])
                try:
                    out = await loop.run_in_executor(self._executor, self.predict, batch)
                except BaseException as e:  # every caller of this batch gets the model's error (or cancellation)
                    for _, future in taken:
                        if not future.done():
                            future.set_exception(e)
                    if not isinstance(e, Exception):
                        raise
                    continue
                start = 0
                for x, future in taken:
                    if not future.done():
                        future.set_result(out[start:start + len(x)])
                    start += len(x)
                if self.observe is not None:  # after the answers: it must not hold them up
                    self.observe(batch, out, len(taken))
        finally:
            self._drain = None

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
