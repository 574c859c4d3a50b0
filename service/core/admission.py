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

One sequence for every transport: ``enter(size, timeout)`` refuses (a ``ServingError``, 429 with
``retry-after``) or admits, as soon as a request's size is known and before its body is read; ``async with
place(ticket)`` waits first-in first-out for one of the places, serves the block, and always finishes the ticket;
the request's deadline (``timeout`` seconds from ``enter``: BentoML's ``traffic.timeout``) ends the wait or the
block with a ``ServingError`` (504) unless the answer has begun (``answering(ticket)``). ``release(ticket)`` is the
safety net of a request that never reached ``place`` (idempotent).

Background work (a shadow version's copy of a request) gives way first: ``background()`` hands out a place only
while no request waits in the queue, fewer than ``concurrency`` are served and fewer than ``concurrency // 4``
background places are out; otherwise None, and the work is skipped. It never holds a request's place.

The decision is docs/decisions/admission.md's. This module does no I/O; the door
(service/upstream/door.py), the HTTP guard (service/api/guard.py) and the gRPC servicer call it, and its tests use a
fake clock.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Iterator

from service.core.errors import RETRY_AFTER, Kind, ServingError


@dataclass
class Ticket:
    """One admitted request: its size in body bytes, its deadline, and how long it queued."""

    size: int
    deadline: float | None = None  # asyncio loop time by which its answer must have begun (None: none)
    timeout: float | None = None  # the seconds that deadline was set from (for the message)
    queued_s: float = 0.0  # how long it waited in the queue for a place
    done: bool = False  # finish() has counted it
    timer: asyncio.Timeout | None = None  # the deadline while the request is served (place)


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
        self.background_places = 0  # background work under way (background())
        self.max_background = max(1, concurrency // 4)
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

    def enter(self, size: int, timeout: float | None = None) -> Ticket:
        """Admit a request of `size` body bytes whose answer must begin within `timeout` seconds (None: no deadline),
        or raise ServingError (429, retry-after) saying why not."""
        refusal = self.refusal(size)
        if refusal:
            raise ServingError(refusal, Kind.OVERLOADED, RETRY_AFTER)
        ticket = self.admit(size)
        if timeout is not None:
            ticket.deadline, ticket.timeout = asyncio.get_running_loop().time() + timeout, timeout
        return ticket

    @contextlib.asynccontextmanager
    async def place(self, ticket: Ticket) -> AsyncIterator[Ticket]:
        """Wait for a place, then serve the block; the ticket is finished however the block ends. Past the ticket's
        deadline, before its answer began (``answering``), the wait or the block ends in ServingError (504)."""
        served = False
        try:
            async with asyncio.timeout_at(ticket.deadline) as timer:
                ticket.timer = timer
                await self.serve(ticket)
                served = True
                yield ticket
        except TimeoutError:
            raise ServingError(f"the request was not answered within {ticket.timeout:g} s", Kind.DEADLINE) from None
        finally:
            ticket.timer = None
            self.finish(ticket, served)

    @staticmethod
    def answering(ticket: Ticket) -> None:
        """The request's answer has begun: its deadline is met."""
        if ticket.timer is not None:
            ticket.timer.reschedule(None)

    def release(self, ticket: Ticket) -> None:
        """A request that ends without being served (an error before place, a client gone): idempotent."""
        self.finish(ticket, served=False)

    def background(self) -> contextlib.AbstractContextManager | None:
        """A place for background work, to hold while it runs, or None when requests need the room."""
        if (self._waiting_count() or self.serving >= self.concurrency
                or self.background_places >= self.max_background):
            return None
        self.background_places += 1
        return self._background_place()

    @contextlib.contextmanager
    def _background_place(self) -> Iterator[None]:
        try:
            yield
        finally:
            self.background_places -= 1

    def _waiting_count(self) -> int:
        while self._waiting and self._waiting[0][2].done():
            self._waiting.popleft()
        return len(self._waiting)

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
