"""Admission control by waiting time: a worker queues requests first-in first-out and refuses a new one only when it would wait longer than a target.

A worker serves up to ``concurrency`` requests at once; the rest wait in a FIFO queue. While the queue
is short-lived, everything is admitted. Once the oldest queued request has waited a third of ``target``,
the queue has stood for a while, and the worker knows how fast it empties it: the requests it finished
during that wait, divided by the wait (a busy period, so an idle spell never lowers the estimate). A new
request would wait about (requests ahead of it) / (that rate); if that is ``target`` or more, it gets 429
at once, before its body is read, and the others are served at full speed within about ``target``.
So:

* a burst that drains within a third of ``target`` (what a host stall piles up) is queued, never refused;
* closed-loop clients (send, wait, send again: browsers, worker pools, wrk) are refused only if there are
  so many of them that each would wait ``target`` or more: their number bounds the queue;
* open-loop arrivals above capacity are held at the level where they wait ``target``; the surplus is
  refused in microseconds. A third of ``target`` is where the rule starts so that a flood of up to three
  times the capacity has not queued more than ``target`` by then.

This is CoDel's idea (act on the time requests wait, not on their number) with Triton's answer (refuse
at the door what cannot start within the delay). Hard caps stay: ``max_requests`` held (queued, served or
still being received) and ``max_bytes`` of bodies held (bodies are read whole before parsing: memory in a
burst). ``target`` 0 turns waiting-time refusals off. This module does no I/O; ``service/middleware.py``
calls it per request, and its tests use a fake clock.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass
from typing import Callable


@dataclass
class Ticket:
    """One admitted request: its size in body bytes, and how long it queued."""

    size: int
    queued_s: float = 0.0  # how long it waited in the queue for a place
    done: bool = False  # finish() has counted it


class Admission:
    """The queue and counters of one worker (every worker process has its own)."""

    def __init__(self, target: float, concurrency: int, max_requests: int, max_bytes: int,
                 clock: Callable[[], float] = time.monotonic):
        self.target = target
        self.concurrency = concurrency
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.clock = clock
        self.held = 0  # requests admitted and not yet finished (queued, served, or receiving their body)
        self.serving = 0
        self.bytes = 0
        self.finished = 0  # requests served so far: the service rate is measured with it
        # the queue: (when each entered it, `finished` at that moment, its future)
        self._waiting: collections.deque[tuple[float, int, asyncio.Future]] = collections.deque()

    def head(self, now: float) -> tuple[float, int]:
        """How long the oldest queued request has waited, and how many were served meanwhile ((0, 0): no queue)."""
        while self._waiting and self._waiting[0][2].done():  # served or given up
            self._waiting.popleft()
        if not self._waiting:
            return 0.0, 0
        entered, finished, _ = self._waiting[0]
        return now - entered, self.finished - finished

    def expected_wait(self, now: float) -> float | None:
        """The wait of a request admitted now, once the queue has stood a third of the target (else None)."""
        waited, served = self.head(now)
        if not self.target or waited < self.target / 3:
            return None
        ahead = self.held - self.concurrency + 1  # queued (or still being received) ahead of it, itself included
        return ahead * waited / served if served else float("inf")

    def refusal(self, size: int) -> str | None:
        """Why a request of `size` body bytes must be refused now, or None to admit it."""
        now = self.clock()
        if self.held >= self.max_requests:
            return f"overloaded: {self.held} requests are already held (limit {self.max_requests}); retry later"
        if self.held and self.bytes + size > self.max_bytes:
            return (f"overloaded: {self.bytes} bytes of request bodies are held (limit {self.max_bytes}); "
                    f"retry later")
        wait = self.expected_wait(now)
        if wait is not None and wait >= self.target:
            return (f"overloaded: a request now would wait about {min(wait, 999):.2f} s in the queue "
                    f"(target {self.target:g} s); retry later")
        return None

    def admit(self, size: int) -> Ticket:
        """Count a request that `refusal` let in; `finish` must follow."""
        self.held += 1
        self.bytes += size
        return Ticket(size)

    async def serve(self, ticket: Ticket) -> None:
        """Wait first-in first-out for one of the `concurrency` places; then the request is being served."""
        if self.serving < self.concurrency and not self._waiting:
            self.serving += 1
            return
        future = asyncio.get_running_loop().create_future()
        entered = self.clock()
        self._waiting.append((entered, self.finished, future))
        try:
            await future  # `finish` of a served request hands its place over (serving stays counted)
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # handed a place, then cancelled: pass it on
                self._release()
            raise
        ticket.queued_s = self.clock() - entered

    def finish(self, ticket: Ticket, served: bool) -> None:
        """The request is over (answered, refused later, or its client gone); once per ticket, later calls do nothing."""
        if ticket.done:
            return
        ticket.done = True
        self.held -= 1
        self.bytes -= ticket.size
        if served:
            self.finished += 1
            self._release()

    def _release(self) -> None:
        while self._waiting:
            _, _, future = self._waiting.popleft()
            if not future.done():
                future.set_result(None)  # the place passes straight to the next in line
                return
        self.serving -= 1
