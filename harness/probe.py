"""Single requests on fresh connections, for probes while a load runs: /readyz during a flood, recovery after it, a new worker after a crash."""

from __future__ import annotations

import asyncio
from time import monotonic
from urllib.parse import urlsplit

import httptools

from testkit.driver import raw_request
from testkit.payloads import READYZ, Payload


class _One(asyncio.Protocol):
    def __init__(self):
        self.parser = httptools.HttpResponseParser(self)
        self.answer = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.connection_lost(None)

    def on_message_complete(self) -> None:
        if not self.answer.done():
            self.answer.set_result(self.parser.get_status_code())

    def connection_lost(self, exc) -> None:
        if not self.answer.done():
            self.answer.set_result(0)


async def fetch(url: str, payload: Payload = READYZ, timeout: float = 2.0) -> tuple[int, float]:
    """One request on a new connection: (status, seconds); status 0 when there was no answer within `timeout`."""
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    started, transport, status = monotonic(), None, 0
    try:
        async with asyncio.timeout(timeout):
            transport, proto = await loop.create_connection(_One, parts.hostname, parts.port or 80)
            transport.write(raw_request(parts.netloc, payload))
            status = await proto.answer
    except (OSError, TimeoutError):
        status = 0
    finally:
        if transport is not None:
            transport.close()
    return status, monotonic() - started


async def probe(url: str, stop: asyncio.Event, payload: Payload = READYZ, every: float = 0.5,
                timeout: float = 2.0) -> list[tuple[float, int, float]]:
    """(time, status, seconds) of `payload` every `every` s until `stop` is set (time from the first probe)."""
    out, t0 = [], monotonic()
    while not stop.is_set():
        started = monotonic() - t0
        out.append((round(started, 3), *await fetch(url, payload, timeout)))
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, every - (monotonic() - t0 - started)))
        except TimeoutError:
            pass
    return out


async def recovery(url: str, payload: Payload, normal_s: float, every: float = 0.05, needed: int = 3,
                   give_up: float = 30) -> tuple[float | None, list]:
    """Seconds from now until the first of `needed` consecutive 200s within `normal_s`; None if not within `give_up`."""
    t0, streak, probes = monotonic(), [], []
    while monotonic() - t0 < give_up:
        started = monotonic() - t0
        status, seconds = await fetch(url, payload, timeout=10)
        probes.append((round(started, 3), status, round(1000 * seconds, 2)))
        streak = streak + [started] if status == 200 and seconds <= normal_s else []
        if len(streak) >= needed:
            return round(streak[0], 3), probes
        await asyncio.sleep(max(0.0, every - (monotonic() - t0 - started)))
    return None, probes
