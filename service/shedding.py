"""Load shedding that tells a burst from overload: 429 for a queue that stands, or for too many body bytes in flight.

A worker answers requests one after another on its event loop (service/fastpath.py), so the requests it
holds are a queue. BentoML's ``traffic.max_concurrency`` refuses by count, at once; a count cannot tell a
burst from overload. On a shared machine a worker is sometimes descheduled for a few hundred milliseconds
(hypervisor CPU steal: docs/reliability.md); at half its capacity the requests that arrive meanwhile are
read all at once when it runs again, 30-40 of them, and they drain in ~150 ms. Refusing them by count
turned normal load into errors. An overloaded worker's queue, instead, never drains.

What tells them apart is how long the queue lasts. Each worker keeps the average number of requests it has
held over about the last ``window`` seconds (an exponentially weighted time average). The worker is
overloaded while that average is at least ``depth / 2``; then a request that would make the queue deeper
than ``depth`` is refused with 429 (and Retry-After), which keeps the wait short. A burst after a stall
adds little to the average (40 requests held for 0.15 s add ~3 to a two-second average) and is served;
clients that keep the worker busy back to back keep the average near their number (16 clients: 10-14). ``depth``
0 turns this off. ``traffic.max_concurrency`` stays, higher, as the hard cap on any burst. Separately, a
request is refused when its body would take the bytes held in flight past ``max_bytes`` (bodies are read
whole before parsing: a burst of large bodies is a memory risk).
"""

from __future__ import annotations

import math
import time
from typing import Callable

from service.middleware import Receive, Scope, Send, respond

RETRY_AFTER = ((b"retry-after", b"1"),)
DEPTH, WINDOW_S = 12, 2.0  # the defaults of SERVICE_SHED_DEPTH and SERVICE_SHED_WINDOW_S (docs/reliability.md)


class QueueShedder:
    """ASGI middleware; counts per worker process (every worker has its own queue)."""

    def __init__(self, app: Callable, depth: int, window: float, max_bytes: int, unknown_size: int,
                 clock: Callable[[], float] = time.monotonic):
        self.app = app
        self.depth = depth  # 0: no queue-based shedding
        self.window = window
        self.max_bytes = max_bytes
        self.unknown_size = unknown_size  # what a body without Content-Length (chunked) may grow to
        self.clock = clock
        self.in_flight = 0
        self.bytes_in_flight = 0
        self.average = 0.0  # time-averaged in_flight over about the last `window` seconds
        self._averaged_until = clock()

    def _advance(self, now: float) -> None:
        """Fold the time since the last change, during which `in_flight` was constant, into the average."""
        elapsed = now - self._averaged_until
        if elapsed > 0:
            keep = math.exp(-elapsed / self.window)
            self.average = self.average * keep + self.in_flight * (1 - keep)
            self._averaged_until = now

    @property
    def overloaded(self) -> bool:
        return bool(self.depth) and self.average >= self.depth / 2

    def _refusal(self, size: int) -> str | None:
        if self.overloaded and self.in_flight >= self.depth:
            return (f"overloaded: {self.in_flight} requests are queued, {self.average:.1f} on average over the last "
                    f"{self.window:g} s; retry later")
        if self.in_flight and self.bytes_in_flight + size > self.max_bytes:
            return f"overloaded: {self.bytes_in_flight} bytes of request bodies are in flight (limit {self.max_bytes}); retry later"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        length = next((v for k, v in scope["headers"] if k.lower() == b"content-length"), None)
        size = int(length) if length is not None else self.unknown_size  # h11 refused a malformed one
        self._advance(self.clock())
        refusal = self._refusal(size)
        if refusal:
            return await respond(send, 429, refusal, RETRY_AFTER)
        self.in_flight += 1
        self.bytes_in_flight += size
        try:
            await self.app(scope, receive, send)
        finally:
            self._advance(self.clock())
            self.in_flight -= 1
            self.bytes_in_flight -= size
