"""Cold start: process start to the first /readyz 200, then the latency of the very first request of each kind."""

from __future__ import annotations

import time
from pathlib import Path

from testkit import server as servers
from testkit.payloads import Payload


def first_requests(server: servers.Server, payloads: dict[str, Payload]) -> dict[str, float]:
    """Milliseconds for the first request to each endpoint (nothing warmed up before it but /readyz)."""
    out = {}
    for name, p in payloads.items():
        start = time.perf_counter()
        status, body = servers.request(server.url, "POST", p.path, p.body, p.content_type, timeout=60)
        out[name] = round((time.perf_counter() - start) * 1000, 2)
        if status != 200:
            raise RuntimeError(f"first {name} request answered {status}: {body[:200]!r}")
    return out


def measure(start, payloads: dict[str, Payload], trials: int) -> list[dict]:
    """`start()` returns a freshly spawned Server; each trial times readiness and first requests, then stops it."""
    results = []
    for _ in range(trials):
        server = start()
        try:
            ready = server.wait_ready(every_worker=False)  # what a readiness probe sees first
            first = first_requests(server, payloads)
        finally:
            server.stop()
        results.append({"ready_s": round(ready, 3), "first_request_ms": first})
    return results


def service_trials(home: Path, logdir: Path, trials: int, payloads: dict[str, Payload], **service) -> dict:
    """The first start imports the committed models into an empty model store; later ones find them there.
    `service`: start_service's workers, bentoml_config and env."""
    start = lambda: servers.start_service(home=home, logdir=logdir, **service)  # noqa: E731
    return {"empty_store": measure(start, payloads, 1), "warm": measure(start, payloads, trials)}


def baseline_trials(workers: int, logdir: Path, trials: int, payloads: dict[str, Payload], env=None) -> dict:
    return {"warm": measure(lambda: servers.start_baseline(workers, env, logdir), payloads, trials)}
