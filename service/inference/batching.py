"""Adaptive batching in process: concurrent requests for one model share its calls, and a lone request never waits.

Why not BentoML's ``batchable=True``: a batchable API takes exactly one argument and is its own HTTP
endpoint; our typed endpoints (``/digit`` with ``max_value``, ``/digits``, ``/digit/image``, the v2
protocol) reach it only through BentoML's in-process HTTP proxy, which serialises every image to JSON
and back and runs the whole middleware stack a second time (docs/decisions/batching.md).

How it batches: a call puts its images in a queue and awaits them. If the model is idle, a drain task
starts at once; it runs on the event loop's next turn, so the calls parsed in the same turn join the
first batch. While a batch runs in the model's thread (ONNX Runtime and torch release the GIL), the
event loop keeps parsing requests, and those queue for the next batch, up to ``max_batch`` images. A
request larger than ``max_batch`` runs alone, whole.

Under load a batch also gathers: once recent batches have held n >= 2 requests (a moving average of
requests per batch), a batch that would start with fewer than n queued waits for the n-th, at most
``gather_s``. A model call's cost is mostly fixed (the weights are read once per call), and on a busy
host the requests of the next batch are still being parsed when the model frees: starting with the one
already queued spent a whole call on it. A lone request never waits (its batches hold one request, so
n stays below 2), nor does a batch whose company is already queued; ``gather_s = 0`` never gathers.
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

    # Weight of the latest batch in the moving average of requests per batch: about the last ten batches count.
    TYPICAL_WEIGHT = 0.2

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_batch: int, name: str = "model",
                 observe: Observer | None = None, gather_s: float = 0.0):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if gather_s < 0:
            raise ValueError("gather_s must be >= 0")
        self.predict = predict
        self.max_batch = max_batch
        self.observe = observe
        self.gather_s = gather_s
        self.typical = 1.0  # requests per batch, a moving average
        self._gathering: tuple[int, asyncio.Future] | None = None  # (requests awaited, set when they are queued)
        # One thread: calls run one after another (the model's own intra-op threads parallelise each call).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{name}")
        self._queue: collections.deque[tuple[np.ndarray, asyncio.Future]] = collections.deque()
        self._drain: asyncio.Task | None = None

    async def __call__(self, x: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((x, future))
        if self._gathering is not None and len(self._queue) >= self._gathering[0]:
            _set(self._gathering[1])
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

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """Under load, wait (at most gather_s) until the queue holds the typical batch's requests (module docstring)."""
        want = int(self.typical)
        if not self.gather_s or want < 2 or len(self._queue) >= want:
            return
        ready = loop.create_future()
        self._gathering = (want, ready)
        timer = loop.call_later(self.gather_s, _set, ready)
        try:
            await ready
        finally:
            timer.cancel()
            self._gathering = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                await self._gather(loop)
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
                self.typical += self.TYPICAL_WEIGHT * (len(taken) - self.typical)
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


def _set(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
