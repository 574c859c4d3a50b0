"""The Python load driver: open loop (arrivals at scheduled times, fixed rate or Poisson) or closed loop (N clients back to back), HTTP/1.1 on uvloop.

Open loop with `sources`: the arrivals come from that many independent clients (each arrival from one drawn at
random); with `honour_retry_after`, a client refused with 429 sends nothing for the Retry-After seconds the
answer gives (its arrivals meanwhile are held back: counted, not sent), as HTTP asks of clients. A closed-loop
client with `honour_retry_after` likewise waits Retry-After before it sends again.

Requests are pre-built bytes written on a pool of keep-alive connections that grows as needed (up to
`max_connections`); answers are parsed by httptools (status line and length only; with `answer`, the body too,
each turned into what `answer` returns, kept in `answers`; with `keep_headers` too, `answer(body, headers)`
gets those headers). `stop()` ends a run early. Open loop: a request
is sent at its arrival time whether or not earlier ones were answered; when no connection is free one
is opened, and the request waits for it (the wait shows as send lag). Every request gives one row of
`testkit.records.Records`; the driver's own CPU time is measured (psutil) and reported with it.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import itertools
import random
import resource
from time import monotonic
from typing import Any, Callable
from urllib.parse import urlsplit

import httptools
import psutil
import uvloop

from testkit.payloads import Payload
from testkit.records import Records

MAX_CONNECTIONS = 4096
CONNECT, CLOSED, TIMEOUT, BAD, UNANSWERED = range(1, 6)  # testkit.records.ERRORS
TICK_S = 0.001  # the open-loop scheduler wakes at most once a millisecond and sends everything due
# Idle keep-alive connections are not reused after this long: uvicorn closes them after 5 s, and a request
# written just as the server closes its connection is lost (what browsers and HTTP libraries avoid the same way).
IDLE_REUSE_S = 4.0


def raw_request(host: str, p: Payload) -> bytes:
    head = f"{p.method} {p.path} HTTP/1.1\r\nHost: {host}\r\n"
    if p.content_type:
        head += f"Content-Type: {p.content_type}\r\n"
    if p.body or p.method == "POST":
        head += f"Content-Length: {len(p.body)}\r\n"
    return (head + "\r\n").encode() + p.body


class _Connection(asyncio.Protocol):
    """One keep-alive connection and the request in flight on it."""

    def __init__(self, driver: "Driver"):
        self.driver = driver
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.current: tuple[int, float, float, int] | None = None  # (request index, scheduled, sent, source)
        self.idle_since = 0.0
        self.retry_after: float | None = None  # of the answer being parsed
        self.body = bytearray()  # of the answer being parsed, when the driver keeps answers
        self.kept: dict[bytes, bytes] = {}  # its headers named in the driver's keep_headers

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"retry-after":
            try:
                self.retry_after = float(value)
            except ValueError:
                self.retry_after = None
        elif name in self.driver.keep_headers:
            self.kept[name] = value

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.current is not None:
                self.driver._finish(self, 0, BAD)
            self.transport.abort()

    def on_message_complete(self) -> None:
        retry_after, self.retry_after = self.retry_after, None
        if self.driver.answer is not None:
            kept, self.kept = self.kept, {}
            made = self.driver.answer(bytes(self.body), kept) if self.driver.keep_headers else \
                self.driver.answer(bytes(self.body))
            self.driver.answers.append(made)
            self.body.clear()
        self.driver._answered(self, self.parser.get_status_code(), self.parser.should_keep_alive(), retry_after)

    def connection_lost(self, exc) -> None:
        self.driver._lost(self)


class _KeepingConnection(_Connection):
    """A connection that also reads the answers' bodies (httptools calls on_body only where it is defined)."""

    def on_body(self, body: bytes) -> None:
        self.body += body


class Driver:
    """Drive `url` with requests drawn from `mix` ((payload, weight) pairs); `run()` returns the records."""

    def __init__(self, url: str, mix: list[tuple[Payload, float]], *, max_connections: int = MAX_CONNECTIONS,
                 timeout: float = 30.0, seed: int = 0, backoff_429: float = 0.0, error_pause: float = 0.05,
                 honour_retry_after: bool = False, answer: Callable[..., Any] | None = None,
                 keep_headers: tuple[bytes, ...] = ()):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        payloads = [p for p, _ in mix]
        self.kinds = list(dict.fromkeys(p.name for p in payloads))
        self.kind_of = [self.kinds.index(p.name) for p in payloads]
        self.raw = [raw_request(parts.netloc, p) for p in payloads]
        self.cumulative = list(itertools.accumulate(w for _, w in mix))
        self.rng = random.Random(seed)
        self.jitter = random.Random(seed + 1)  # apart from the arrivals' draws: the same schedule either way
        self.max_connections, self.timeout = max_connections, timeout
        self.backoff_429 = backoff_429  # closed loop: a polite client pauses after "too many requests"
        self.error_pause = error_pause  # ... and after no answer, rather than spin on a dead server
        self.honour_retry_after = honour_retry_after
        self.answer = answer  # when set: what it makes of each answer's body, in `answers` in the order answered
        self.keep_headers = tuple(h.lower() for h in keep_headers)  # when set: answer(body, {header: value})
        self.answers: list[Any] = []
        self.connection_class = _Connection if answer is None else _KeepingConnection
        self._stop: asyncio.Event | None = None
        self.quiet_until: list[float] = []  # open loop with sources: when each source may send again
        self.held_back = 0  # open-loop arrivals not sent: their source was waiting out a Retry-After
        self.rows: list[tuple] = []
        self.idle: list[_Connection] = []  # a stack: the most recently used first, the rest may time out
        self.busy: set[_Connection] = set()
        self.pending: collections.deque[tuple[int, float]] = collections.deque()  # waiting for a connection
        self.connections = self.opening = self.max_seen = 0
        self.sending = self.closed_loop = self.done = False
        self.t0 = self.end = self.next_at = self.rate = 0.0
        self.poisson = False
        self.stopped_sending: asyncio.Event | None = None
        self.stopped_at = 0.0

    # ---- the pool -------------------------------------------------------------------------------

    def _pick(self) -> int:
        return min(bisect.bisect(self.cumulative, self.rng.random() * self.cumulative[-1]), len(self.raw) - 1)

    def _dispatch(self, index: int, scheduled: float, source: int = -1) -> None:
        while self.idle:
            conn = self.idle.pop()
            if monotonic() - conn.idle_since > IDLE_REUSE_S:  # about to be closed by the server: drop it
                conn.transport.close()  # connection_lost then takes it out of the count
                continue
            self._send(conn, index, scheduled, source)
            return
        self.pending.append((index, scheduled, source))
        if self.connections < self.max_connections and self.opening < len(self.pending):
            self._open()

    def _open(self) -> None:
        self.connections += 1
        self.opening += 1
        self.max_seen = max(self.max_seen, self.connections)
        self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            _, conn = await self.loop.create_connection(lambda: self.connection_class(self), self.host, self.port)
        except OSError:
            self.opening -= 1
            self.connections -= 1
            if self.pending:
                index, scheduled, _ = self.pending.popleft()
                self._record(index, scheduled, monotonic(), monotonic(), 0, CONNECT)
            return
        self.opening -= 1
        self._free(conn)

    def _send(self, conn: _Connection, index: int, scheduled: float, source: int = -1) -> None:
        conn.current = (index, scheduled, monotonic(), source)
        self.busy.add(conn)
        conn.transport.write(self.raw[index])

    def _free(self, conn: _Connection) -> None:
        if self.pending:
            self._send(conn, *self.pending.popleft())
        else:
            conn.idle_since = monotonic()
            self.idle.append(conn)

    def _finish(self, conn: _Connection, status: int, error: int = 0, reuse: bool = False,
                retry_after: float | None = None) -> None:
        """The request on `conn` is over (answered, or failed with `error`); `reuse`: the connection is free."""
        now = monotonic()
        index, scheduled, sent, source = conn.current
        conn.current = None
        self.busy.discard(conn)
        if reuse:
            self._free(conn)  # before a closed-loop client sends again, so that it finds this connection
        wait = retry_after * (1 + self.jitter.random()) if self.honour_retry_after and status == 429 and retry_after else 0.0
        if wait and source >= 0:
            self.quiet_until[source] = max(self.quiet_until[source], now + wait)
        self._record(index, scheduled, sent, now, status, error, wait)

    def _answered(self, conn: _Connection, status: int, keep_alive: bool, retry_after: float | None = None) -> None:
        if not keep_alive:
            conn.transport.close()
        self._finish(conn, status, reuse=keep_alive, retry_after=retry_after)

    def _lost(self, conn: _Connection) -> None:
        self.connections -= 1
        if conn.current is not None:
            self._finish(conn, 0, CLOSED)
        elif conn in self.idle:
            self.idle.remove(conn)
        if self.pending and self.connections < self.max_connections and self.opening < len(self.pending):
            self._open()

    def _record(self, index: int, scheduled: float, sent: float, done: float, status: int, error: int,
                retry_after: float = 0.0) -> None:
        self.rows.append((self.kind_of[index], scheduled - self.t0, sent - self.t0, done - self.t0, status, error))
        if self.closed_loop and self.sending:
            pause = (retry_after or self.backoff_429) if status == 429 else self.error_pause if status == 0 else 0.0
            if pause:
                self.loop.call_later(pause, self._client_again)
            else:
                self._client_again()

    def _client_again(self) -> None:
        if self.sending:
            self._dispatch(self._pick(), monotonic())

    def _tick(self) -> None:
        now = monotonic()
        while self.sending and self.next_at <= now and self.next_at < self.end:
            source = self.rng.randrange(len(self.quiet_until)) if self.quiet_until else -1
            if source >= 0 and self.quiet_until[source] > self.next_at:
                self.held_back += 1  # this client is waiting out a Retry-After: it does not send
            else:
                self._dispatch(self._pick(), self.next_at, source)
            self.next_at += self.rng.expovariate(self.rate) if self.poisson else 1.0 / self.rate
        if self.sending and self.next_at < self.end:
            self.loop.call_later(max(self.next_at - monotonic(), TICK_S), self._tick)

    def _sweep(self) -> None:
        """Once a second: requests unanswered after `timeout` fail and their connections are dropped."""
        now = monotonic()
        for conn in [c for c in self.busy if now - c.current[2] > self.timeout]:
            self._finish(conn, 0, TIMEOUT)
            conn.transport.abort()
        if not self.done:
            self.loop.call_later(1.0, self._sweep)

    # ---- a run ----------------------------------------------------------------------------------

    async def run(self, seconds: float, *, rate: float | None = None, clients: int = 0, poisson: bool = False,
                  prewarm: int = 0, drain: float | None = None, sources: int = 0) -> Records:
        """Open loop at `rate` requests/s (from `sources` clients, 0: one anonymous stream), or closed loop with
        `clients`, for `seconds`; then wait up to `drain` (default: the timeout) for the answers still due. Times in
        the records count from the start; `extra["held_back"]` counts arrivals not sent for a Retry-After."""
        self.loop = asyncio.get_running_loop()
        self.quiet_until = [0.0] * sources
        self.stopped_sending = asyncio.Event()
        self.connections += prewarm
        self.opening += prewarm
        self.max_seen = max(self.max_seen, self.connections)
        await asyncio.gather(*(self._connect() for _ in range(prewarm)))
        proc = psutil.Process()
        cpu0 = sum(proc.cpu_times()[:2])
        self.t0 = monotonic()
        self.end = self.t0 + seconds
        self.sending = True
        self.loop.call_later(1.0, self._sweep)
        if rate:
            self.rate, self.poisson, self.next_at = rate, poisson, self.t0
            self._tick()
        else:
            self.closed_loop = True
            for _ in range(clients):
                self._dispatch(self._pick(), self.t0)
        self._stop = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), max(0.0, self.end - monotonic()))
        self.sending = False
        self.stopped_at = monotonic() - self.t0
        self.stopped_sending.set()
        deadline = monotonic() + (self.timeout if drain is None else drain)
        while (self.busy or self.pending) and monotonic() < deadline:
            await asyncio.sleep(0.01)
        now = monotonic()
        for conn in list(self.busy):
            self._finish(conn, 0, UNANSWERED)
            conn.transport.abort()
        while self.pending:
            index, scheduled, _ = self.pending.popleft()
            self._record(index, scheduled, now, now, 0, UNANSWERED)
        self.done = True
        for conn in list(self.idle):
            conn.transport.close()
        cpu = sum(proc.cpu_times()[:2]) - cpu0
        return Records.from_rows(self.kinds, self.rows, seconds, client_cpu_s=cpu, client_wall_s=monotonic() - self.t0,
                                 max_connections=self.max_seen, extra={"held_back": self.held_back})


    def stop(self) -> None:
        """Stop sending now (a run ends as if its `seconds` were up); call from the driver's event loop."""
        if self._stop is not None:
            self._stop.set()


def go(coroutine):
    """Run `coroutine` on a uvloop event loop, with as many file descriptors as the system allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return uvloop.run(coroutine)
