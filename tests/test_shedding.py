"""service/shedding.py: a burst is served, a queue that lasts is shed with 429, and so are too many body bytes."""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from service.shedding import QueueShedder


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class HeldApp:
    """An endpoint that answers 200 only when the test releases it, so the test decides what is in flight."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def __call__(self, scope, receive, send) -> None:
        self.entered += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def scope(method: str = "POST", length: int | None = 10) -> dict:
    headers = [(b"content-type", b"application/json")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http", "method": method, "path": "/digit", "headers": headers}


async def call(shedder: QueueShedder, s: dict) -> tuple[int, dict, dict]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    # A request that should have been refused but was admitted would wait in HeldApp: fail, do not hang.
    await asyncio.wait_for(shedder(s, receive, send), 5)
    headers = {k.decode(): v.decode() for k, v in sent[0].get("headers", [])}
    body = sent[1]["body"]
    return sent[0]["status"], headers, (json.loads(body) if sent[0]["status"] != 200 else {})


def make(depth: int = 12, window: float = 2.0, max_bytes: int = 10**6, unknown_size: int = 500):
    app, clock = HeldApp(), Clock()
    return QueueShedder(app, depth=depth, window=window, max_bytes=max_bytes, unknown_size=unknown_size,
                        clock=clock), app, clock


async def hold(shedder: QueueShedder, n: int, **kw) -> list[asyncio.Task]:
    """n requests admitted and held in flight."""
    tasks = [asyncio.create_task(call(shedder, scope(**kw))) for _ in range(n)]
    for _ in range(5):  # let every task enter the middleware and wait in the held app
        await asyncio.sleep(0)
    return tasks


async def finish(app: HeldApp, tasks: list[asyncio.Task]) -> list[int]:
    app.release.set()
    statuses = [status for status, _, _ in await asyncio.gather(*tasks)]
    app.release.clear()
    return statuses


def test_the_average_is_the_time_weighted_queue_over_the_window():
    async def go():
        shedder, app, clock = make(depth=12, window=2.0)
        held = await hold(shedder, 10)
        clock.now += 0.5
        tasks = held + await hold(shedder, 1)  # the average is folded in when a request comes or goes
        assert shedder.average == pytest.approx(10 * (1 - math.exp(-0.25)))
        clock.now += 2.0
        assert await finish(app, tasks) == [200] * 11
        expected = (10 * (1 - math.exp(-0.25))) * math.exp(-1.0) + 11 * (1 - math.exp(-1.0))
        assert shedder.average == pytest.approx(expected)

    asyncio.run(go())


def test_bursts_that_drain_quickly_are_served_in_full():
    """40 at once (a worker back from a 300 ms stall), held 0.15 s, twice in a row: the average stays below
    depth / 2 and nothing is refused, though 40 is far deeper than depth."""
    async def go():
        shedder, app, clock = make(depth=12, window=2.0)
        for _ in range(2):
            tasks = await hold(shedder, 40)
            clock.now += 0.15
            assert await finish(app, tasks) == [200] * 40
        assert not shedder.overloaded and shedder.average < 12 / 2
        assert shedder.in_flight == 0 and shedder.bytes_in_flight == 0

    asyncio.run(go())


def test_a_queue_that_lasts_is_capped_at_depth_with_429_until_the_average_falls():
    async def go():
        shedder, app, clock = make(depth=12, window=2.0)
        held = await hold(shedder, 16)
        clock.now += 1.0  # 16 queued for a second: average 6.3 >= 12 / 2
        status, headers, body = await call(shedder, scope())
        assert status == 429 and headers["retry-after"] == "1" and set(body) == {"error"}
        assert body["error"] == "overloaded: 16 requests are queued, 6.3 on average over the last 2 s; retry later"
        assert app.entered == 16  # the refused request never reached the endpoint
        assert await finish(app, held) == [200] * 16
        # still overloaded: admitted up to depth, refused beyond it
        capped = await hold(shedder, 12)
        assert shedder.overloaded and (await call(shedder, scope()))[0] == 429
        assert await finish(app, capped) == [200] * 12
        # four quiet seconds later the average has fallen: a burst is queued in full again
        clock.now += 4.0
        tasks = await hold(shedder, 20)
        assert not shedder.overloaded and shedder.in_flight == 20
        assert await finish(app, tasks) == [200] * 20

    asyncio.run(go())


def test_depth_zero_turns_queue_shedding_off():
    async def go():
        shedder, app, clock = make(depth=0)
        tasks = await hold(shedder, 20, length=1)
        clock.now += 60
        tasks += await hold(shedder, 1, length=1)
        assert await finish(app, tasks) == [200] * 21

    asyncio.run(go())


def test_bodies_past_the_bytes_in_flight_limit_are_shed_and_a_lone_large_one_is_not():
    async def go():
        shedder, app, clock = make(depth=100, max_bytes=1000, unknown_size=500)
        held = await hold(shedder, 1, length=600)
        status, headers, body = await call(shedder, scope(length=401))
        assert status == 429 and headers["retry-after"] == "1"
        assert "600 bytes of request bodies are in flight (limit 1000)" in body["error"]
        held += await hold(shedder, 1, length=400)
        status, _, _ = await call(shedder, scope(length=None))  # chunked: counted as unknown_size
        assert status == 429
        assert await finish(app, held) == [200, 200]
        assert shedder.bytes_in_flight == 0
        lone = await hold(shedder, 1, length=5000)  # alone: the body limit (413) is RequestGuard's job
        assert await finish(app, lone) == [200]

    asyncio.run(go())


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_reads_are_never_shed(method):
    async def go():
        shedder, app, clock = make(depth=2, window=1.0)
        held = await hold(shedder, 4)
        clock.now += 10
        assert (await call(shedder, scope()))[0] == 429  # a POST now would be
        app.release.set()
        assert (await call(shedder, scope(method=method)))[0] == 200
        await asyncio.gather(*held)

    asyncio.run(go())
