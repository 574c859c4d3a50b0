"""A small asyncio load generator (aiohttp) with a realistic request mix, for overload, crash and soak runs.

Closed loop: `concurrency` clients each send a request, wait for the answer, and send the next; or open loop
at a fixed `rate` (requests per second, at most `concurrency` in flight). Every answer is recorded with its
start time, latency and status (or the exception when there was no HTTP answer).
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
MNIST_RAW = "MNIST/raw/t10k-images-idx3-ubyte"


def mnist_images(n: int = 256) -> np.ndarray:
    """MNIST test images when the data is there (MNIST_DATA_ROOT or ../shared), else synthetic strokes."""
    import os

    root = Path(os.environ.get("MNIST_DATA_ROOT", REPO.parent / "shared" / "data" / "mnist"))
    path = root / MNIST_RAW
    if path.exists():
        return np.frombuffer(path.read_bytes(), np.uint8, offset=16).reshape(-1, 28, 28)[:n].copy()
    rng = np.random.default_rng(0)
    images = np.zeros((n, 28, 28), np.uint8)
    for img in images:
        r0, c0 = rng.integers(4, 14, 2)
        img[r0 : r0 + 12, c0 : c0 + 3] = 255
    return images


@dataclass(frozen=True)
class Request:
    kind: str
    method: str
    path: str
    body: bytes | None = None
    content_type: str | None = None


BOUNDARY = "reliability-load-boundary-7c1f"


def multipart(field: str, data: bytes, filename: str = "digit.png", content_type: str = "image/png") -> tuple[bytes, str]:
    """A one-file multipart/form-data body, built once (building it per request costs the client more CPU)."""
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    return body, f"multipart/form-data; boundary={BOUNDARY}"


def request_mix(seed: int = 0) -> list[tuple[Request, float]]:
    """What clients send, with weights: mostly single digits and temperatures, some batches and uploads."""
    images = mnist_images()
    rng = random.Random(seed)

    def png(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "PNG")
        return buf.getvalue()

    mix: list[tuple[Request, float]] = []
    for i in range(8):
        readings = [round(rng.uniform(-50, 120), 2) for _ in range(rng.choice([1, 10, 100]))]
        model = "linear" if i % 2 else "mlp"
        mix.append((Request("temperature", "POST", "/temperature",
                            json.dumps({"readings": readings, "model": model}).encode(), "application/json"), 0.35 / 8))
    for i in range(8):
        mix.append((Request("digit", "POST", "/digit", json.dumps({"pixels": images[i].tolist()}).encode(),
                            "application/json"), 0.35 / 8))
    for i in range(2):
        batch = images[32 * i : 32 * (i + 1)]
        mix.append((Request("digits", "POST", "/digits", json.dumps({"images": batch.tolist()}).encode(),
                            "application/json"), 0.1 / 2))
    for i in range(8):
        a = images[100 + i]
        a = np.asarray(Image.fromarray(255 - a).resize((112, 112))) if i % 2 else a
        mix.append((Request("image", "POST", "/digit/image", *multipart("image", png(a))), 0.2 / 8))
    return mix


@dataclass
class Result:
    start: float  # seconds since the load began
    latency: float
    status: int  # 0: no HTTP answer
    kind: str
    error: str = ""


@dataclass
class Stats:
    results: list[Result] = field(default_factory=list)
    duration: float = 0.0

    def window(self, start: float, end: float) -> "Stats":
        return Stats([r for r in self.results if start <= r.start < end], end - start)

    @property
    def by_status(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            key = str(r.status) if r.status else f"error:{r.error}"
            out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items()))

    @property
    def ok(self) -> list[Result]:
        return [r for r in self.results if r.status == 200]

    @property
    def failed(self) -> list[Result]:
        """Answers that are neither 200 nor deliberate load shedding (429/503)."""
        return [r for r in self.results if r.status not in (200, 429, 503)]

    def throughput(self) -> float:
        return len(self.ok) / self.duration if self.duration else 0.0

    def latency(self, q: float, ok_only: bool = True) -> float:
        values = [r.latency for r in (self.ok if ok_only else self.results)]
        return float(np.quantile(values, q)) if values else float("nan")

    def max_latency(self) -> float:
        return max((r.latency for r in self.results), default=0.0)

    def summary(self) -> dict:
        return {
            "requests": len(self.results),
            "seconds": round(self.duration, 2),
            "ok_per_s": round(self.throughput(), 1),
            "by_status": self.by_status,
            "p50_ms": round(self.latency(0.5) * 1000, 1),
            "p99_ms": round(self.latency(0.99) * 1000, 1),
            "max_ms_all": round(self.max_latency() * 1000, 1),
        }


class Load:
    """Drive `url` until `stop()` or `duration`; results accumulate in `stats`."""

    def __init__(self, url: str, concurrency: int, rate: float | None = None, seed: int = 0,
                 timeout: float = 30.0, backoff_429: float = 0.05, mix: list[tuple[Request, float]] | None = None):
        self.url = url
        self.concurrency = concurrency
        self.rate = rate
        self.timeout = timeout
        self.backoff_429 = backoff_429  # a polite client pauses after "too many requests"
        self.mix = mix or request_mix(seed)
        self.rng = random.Random(seed)
        self.stats = Stats()
        self._stop = asyncio.Event()
        self.t0 = 0.0

    def stop(self) -> None:
        self._stop.set()

    def _pick(self) -> Request:
        requests, weights = zip(*self.mix)
        return self.rng.choices(requests, weights)[0]

    async def _send(self, session: aiohttp.ClientSession, req: Request) -> int:
        started = time.monotonic()
        status, error = 0, ""
        try:
            data, headers = req.body, {"content-type": req.content_type}
            async with session.request(req.method, self.url + req.path, data=data, headers=headers) as resp:
                await resp.read()
                status = resp.status
        except asyncio.TimeoutError:
            error = "timeout"
        except aiohttp.ClientError as e:
            error = type(e).__name__
        self.stats.results.append(Result(started - self.t0, time.monotonic() - started, status, req.kind, error))
        return status

    async def _closed_loop_client(self, session: aiohttp.ClientSession) -> None:
        while not self._stop.is_set():
            status = await self._send(session, self._pick())
            if status == 429 and self.backoff_429:
                await asyncio.sleep(self.backoff_429)

    async def _open_loop(self, session: aiohttp.ClientSession) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        tasks: set[asyncio.Task] = set()

        async def one(req: Request) -> None:
            try:
                await self._send(session, req)
            finally:
                slots.release()

        while not self._stop.is_set():
            # Evenly spaced: a client that fell behind (CPU shared with the server) does not catch up in a burst.
            next_at = max(next_at + interval, time.monotonic())
            await slots.acquire()
            task = asyncio.create_task(one(self._pick()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            delay = next_at - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                except asyncio.TimeoutError:
                    pass
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def run(self, duration: float | None = None) -> Stats:
        self.t0 = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        connector = aiohttp.TCPConnector(limit=self.concurrency, force_close=False)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            if duration is not None:
                asyncio.get_running_loop().call_later(duration, self.stop)
            if self.rate:
                await self._open_loop(session)
            else:
                await asyncio.gather(*(self._closed_loop_client(session) for _ in range(self.concurrency)))
        self.stats.duration = time.monotonic() - self.t0
        return self.stats


async def measure(url: str, concurrency: int, seconds: float, warmup: float = 2.0, **kw) -> Stats:
    """Closed-loop load for warmup + seconds; the stats of the last `seconds` only."""
    load = Load(url, concurrency, **kw)
    stats = await load.run(warmup + seconds)
    return stats.window(warmup, warmup + seconds)


async def probe_until_normal(url: str, normal_latency: float, give_up: float = 30.0, every: float = 0.05,
                             needed: int = 3) -> float | None:
    """Seconds until `needed` consecutive single requests answer 200 within `normal_latency`; None if never."""
    req = next(r for r, _ in request_mix() if r.kind == "digit")
    t0 = time.monotonic()
    streak, first_ok_of_streak = 0, None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while time.monotonic() - t0 < give_up:
            started = time.monotonic()
            try:
                async with session.post(url + req.path, data=req.body, headers={"content-type": req.content_type}) as r:
                    await r.read()
                    good = r.status == 200 and time.monotonic() - started <= normal_latency
            except (aiohttp.ClientError, asyncio.TimeoutError):
                good = False
            if good:
                streak += 1
                first_ok_of_streak = first_ok_of_streak or started
                if streak >= needed:
                    return first_ok_of_streak - t0
            else:
                streak, first_ok_of_streak = 0, None
            await asyncio.sleep(every)
    return None
