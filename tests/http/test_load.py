"""Load behaviour of a real `bentoml serve`, sized from the capacity measured on it and checked through a host stall:
a burst and a closed-loop population up to SERVICE_QUEUE_FLOOR are served in full, an open-loop flood is refused
with 429 and Retry-After, and nothing is left behind."""

import asyncio
import tempfile
from pathlib import Path

import aiohttp
import httpx
import jsonschema_rs
import pytest

from service.api.errors import ERROR_SCHEMA
from service.settings import Settings
from testkit.driver import Driver, go
from testkit.host import freezing
from testkit.payloads import Payload, as_json
from testkit.server import serving

REPO = Path(__file__).resolve().parents[2]
ERROR = jsonschema_rs.validator_for(ERROR_SCHEMA)
FLOOR = Settings().queue_floor  # the closed-loop population a worker always serves (default settings)
FREEZE_MS = 300  # one host stall, mid-run, in every test that promises no refusal


@pytest.fixture(scope="module")
def server():
    with serving(".", REPO, tempfile.mkdtemp(prefix="bentoml-home-load-")) as running:
        yield running


@pytest.fixture(scope="module")
def digit(mnist_test_images):
    images, labels = mnist_test_images
    return images[0], int(labels[0])


@pytest.fixture(scope="module")
def one(digit) -> Payload:
    return Payload("digit", "/digit", "application/json", as_json({"pixels": digit[0].tolist()}))


@pytest.fixture(scope="module")
def batch64(digit) -> Payload:
    return Payload("digits64", "/digits", "application/json", as_json({"images": [digit[0].tolist()] * 64}), 64)


def capacity(url: str, payload: Payload, clients: int = 16, seconds: float = 2.0) -> float:
    """2xx answers per second of a short closed loop: what this server, on this host, serves now."""
    records = go(Driver(url, [(payload, 1.0)]).run(seconds + 1, clients=clients))
    return records.window(1, seconds + 1).ok_per_s()


def assert_healthy(url: str, digit) -> None:
    """/readyz is 200, and a valid request gets the right answer."""
    assert httpx.get(f"{url}/readyz", timeout=30).status_code == 200
    r = httpx.post(f"{url}/digit", json={"pixels": digit[0].tolist()}, timeout=30)
    assert r.status_code == 200 and r.json()["digit"] == digit[1], r.text


async def post(session, url: str, payload: Payload) -> tuple[int, dict, dict]:
    async with session.post(url + payload.path, data=payload.body, headers={"content-type": payload.content_type}) as r:
        return r.status, dict(r.headers), await r.json(content_type=None)


def test_a_burst_of_the_floor_is_queued_and_served_in_full_through_a_stall(server, digit, one):
    """FLOOR requests at once, the worker frozen once while they wait: all are answered, none refused."""
    async def burst():
        connector = aiohttp.TCPConnector(limit=0)  # aiohttp's default of 100 connections would queue them client-side
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60), connector=connector) as session:
            return await asyncio.gather(*(post(session, server.url, one) for _ in range(FLOOR)))

    with freezing(lambda: [w.pid for w in server.workers()], FREEZE_MS, once_after=0.05) as freezes:
        answers = asyncio.run(burst())
    assert freezes, "the worker was not frozen during the burst"
    assert [status for status, _, _ in answers] == [200] * FLOOR, [b for _, _, b in answers if "error" in b][:3]
    assert all(b["digit"] == digit[1] for _, _, b in answers)
    assert_healthy(server.url, digit)


def test_a_closed_loop_population_of_the_floor_is_never_refused_through_a_stall(server, digit, one, record_property):
    """FLOOR clients back to back, long enough for each to be answered several times at the capacity measured here,
    and the worker frozen once mid-run: none is refused, whatever they wait."""
    rate = capacity(server.url, one)
    seconds = max(3.0, 5 * FLOOR / rate)
    with freezing(lambda: [w.pid for w in server.workers()], FREEZE_MS, once_after=seconds / 2) as freezes:
        records = go(Driver(server.url, [(one, 1.0)]).run(seconds, clients=FLOOR))
    summary = records.summary()
    assert freezes, "the worker was not frozen during the run"
    assert summary["ok_2xx"] > FLOOR and summary["non_2xx"] == 0 and summary["transport_errors"] == 0, \
        {"capacity_per_s": rate, "seconds": seconds, **summary}
    assert_healthy(server.url, digit)
    record_property("figures", {"capacity_per_s": round(rate, 1), "seconds": round(seconds, 2), **summary})


def test_an_open_loop_flood_is_refused_with_429_and_retry_after_and_leaves_no_trace(server, digit, batch64,
                                                                                     record_property):
    """64-image batches arriving at three times the rate this server serves them: past the floor the surplus is
    refused with 429, Retry-After and the error shape; every request is answered, the admitted ones correctly."""
    rate = 3 * capacity(server.url, batch64)
    workers = len(server.workers())  # each holds FLOOR before it refuses; the flood is spread over them
    seconds = max(3.0, 2 * FLOOR * workers / (rate - rate / 3))  # the queues grow by two thirds of the rate: past the floors
    seen: list[tuple[int, dict, dict]] = []

    async def flood_and_watch():
        flood = asyncio.ensure_future(Driver(server.url, [(batch64, 1.0)]).run(seconds, rate=rate))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60),
                                         connector=aiohttp.TCPConnector(limit=0)) as session:
            watched = []  # requests of our own in the flood, to look at whole answers
            while not flood.done():
                watched.append(asyncio.ensure_future(post(session, server.url, batch64)))
                # Their arrival schedule, one every 50 ms (open loop: not waiting for answers), until the flood ends.
                await asyncio.wait([flood], timeout=0.05)
            seen.extend(await asyncio.gather(*watched))
        return await flood

    summary = go(flood_and_watch()).summary()
    assert summary["refused_429"] > 0 and summary["ok_2xx"] > 0, {"rate_per_s": rate, **summary}
    assert summary["transport_errors"] == 0 and summary["non_2xx"] == summary["refused_429"], summary
    refused = [(h, b) for status, h, b in seen if status == 429]
    assert refused, [status for status, _, _ in seen]
    for headers, body in refused:
        ERROR.validate(body)
        assert headers.get("Retry-After") == "1" and body["error"].startswith("overloaded: ")
    assert all(len(b) == 64 and b[0]["digit"] == digit[1] for status, _, b in seen if status == 200)
    assert_healthy(server.url, digit)
    record_property("figures", {"rate_per_s": round(rate, 1), **summary})
