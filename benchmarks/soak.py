"""Memory under steady load: all four endpoints at once, paced to about half the service's capacity, RSS sampled throughout."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks import load
from benchmarks.payloads import Payload
from benchmarks.servers import Server

CONNECTIONS = 4  # per endpoint


def pacing(capacity_rps: float, latency_ms: float, share: float) -> float:
    """Per-connection pause (ms) so that CONNECTIONS connections send about share x capacity req/s."""
    target = max(capacity_rps * share, 1.0)
    return max(1.0, CONNECTIONS / target * 1000 - latency_ms)


def run(server: Server, payloads: dict[str, Payload], bodies: dict[str, Path], capacity: dict[str, tuple[float, float]],
        seconds: float, fraction: float = 0.5, sample_every: float = 10) -> dict:
    """capacity: endpoint -> (req/s at full load, p50 ms). Each endpoint gets fraction/len(endpoints) of its capacity."""
    share = fraction / len(payloads)
    delays = {n: pacing(capacity[n][0], capacity[n][1], share) for n in payloads}
    samples: list[dict] = []
    stop = threading.Event()

    def sample() -> None:
        start = time.perf_counter()
        while True:
            samples.append({"t_s": round(time.perf_counter() - start, 1), "rss_mib": server.rss_mib()})
            if stop.wait(sample_every):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with ThreadPoolExecutor(len(payloads)) as pool:
        futures = {n: pool.submit(load.run, server.url, p, bodies[n], CONNECTIONS, seconds, server.name,
                                  delay_ms=delays[n], timeout_s=30) for n, p in payloads.items()}
        results = {n: f.result() for n, f in futures.items()}
    stop.set()
    sampler.join()
    samples.append({"t_s": round(seconds, 1), "rss_mib": server.rss_mib()})
    utilisation = sum(results[n].rps / capacity[n][0] for n in payloads)
    return {
        "seconds": seconds,
        "target_fraction": fraction,
        "achieved_fraction": round(utilisation, 3),
        "delay_ms": {n: round(d, 1) for n, d in delays.items()},
        "results": {n: r.as_dict() for n, r in results.items()},
        "samples": samples,
        "growth": growth(samples),
    }


def growth(samples: list[dict], warmup_s: float = 60) -> dict:
    """Per worker: RSS after the warm-up minute, at the end, the change, and the least-squares slope (MiB/min) after warm-up."""
    later = [s for s in samples if s["t_s"] >= warmup_s] or samples
    workers = min(len(s["rss_mib"]) for s in later)
    out = []
    for w in range(workers):
        ts = [s["t_s"] / 60 for s in later]
        ys = [s["rss_mib"][w] for s in later]
        n, mt, my = len(ts), sum(ts) / len(ts), sum(ys) / len(ys)
        var = sum((t - mt) ** 2 for t in ts)
        slope = sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / var if var else 0.0
        out.append({"start_mib": ys[0], "end_mib": ys[-1], "max_mib": max(ys), "delta_mib": round(ys[-1] - ys[0], 1),
                    "slope_mib_per_min": round(slope, 3), "samples": n})
    return {"warmup_s": warmup_s, "workers": out}
