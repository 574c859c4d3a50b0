"""Admission control: a worker queues requests first-in first-out, always holds a closed-loop population's worth, and beyond that refuses a request that would wait longer than a target.

A worker serves up to ``concurrency`` requests at once; the rest wait in a FIFO queue. Requests are refused
(429, before their body is read) only for one of these reasons:

* ``floor``: up to this many requests held, none is refused for waiting, however long it would wait. A
  closed-loop population (clients that send, wait for the answer, send again: browsers, worker pools,
  ``wrk``) bounds its own queue by its size, and refusing one of its clients lowers nobody's load: the
  client sends again at once, and the refusals take the place of answers. So a population up to ``floor``
  is served in full on any host, fast or slow, and through host stalls.
* ``target``: above the floor, a request that would wait ``target`` seconds or more is refused, judged
  from how fast the worker has been emptying its queue: once the oldest queued request has waited a
  third of ``target`` (a burst that drains sooner is never refused), the requests the worker finished
  during that wait, divided by the wait (a busy period: an idle spell never lowers the estimate). Open-loop
  arrivals above capacity are held where they wait about ``target`` (or where ``floor`` requests are held,
  on a host too slow to serve ``floor`` requests within ``target``), and the surplus is refused in
  microseconds. ``target`` 0 turns waiting-time refusals off.
* hard caps: ``max_requests`` held (queued, served or still being received) and ``max_bytes`` of bodies
  held (bodies are read whole before parsing: memory in a burst).

The decision is docs/decisions/admission.md's. This module does no I/O; the door
(service/upstream/door.py) and the guard (service/api/guard.py) call it per request, and its tests use a
fake clock.
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

    def __init__(self, target: float, concurrency: int, max_requests: int, max_bytes: int, floor: int = 0,
                 clock: Callable[[], float] = time.monotonic):
        self.target = target
        self.floor = floor
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
        if self.held < self.floor:
            return None  # a closed-loop population this size bounds its own queue
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
