"""Soak: mixed load at about half of capacity for a long time; no errors, and memory must not creep.

    python -m reliability.soak --minutes 10          # starts its own server (about 11.5 minutes)

1. Capacity: closed-loop mixed load at --capacity-concurrency for 15 s (answers per second).
2. Open-loop load at --fraction (0.5) of that rate for --warmup s, then for --minutes; the resident memory
   (RSS) of the server's process tree and of its worker is sampled every 10 s.
   --freeze-ms N freezes the worker (SIGSTOP ... SIGCONT) for N ms every --freeze-every s, as a host that
   deschedules it does (CPU steal): the requests sent meanwhile reach it all at once.
3. Pass: every answer is 200 (no 4xx/5xx, no timeout, no connection error), and RSS at the end is less
   than 10 % above RSS at the end of the warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
import time

import psutil

from reliability.load import Load, measure
from reliability.report import finish
from reliability.server import Server, serving

MAX_GROWTH = 0.10


def worker_rss(server: Server) -> int:
    return sum(p.memory_info().rss for p in server.workers())


def cpu_steal() -> float:
    """Seconds of CPU time the hypervisor has taken from this machine since boot (0 on bare metal)."""
    return getattr(psutil.cpu_times(), "steal", 0.0)


@contextlib.contextmanager
def freezing(server: Server, ms: float, every: float):
    """Freeze the server's workers for `ms` milliseconds every `every` seconds until the block ends; yields a
    list that holds one entry per freeze."""
    done, freezes = threading.Event(), []
    if ms <= 0:
        yield freezes
        return

    def run() -> None:
        while not done.wait(every):
            pids = [p.pid for p in server.workers()]
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            time.sleep(ms / 1000)
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
            freezes.append(len(pids))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield freezes
    finally:
        done.set()
        thread.join()


async def soak(server: Server, minutes: float, fraction: float, warmup: float, capacity_concurrency: int,
               rate: float | None, freeze_ms: float = 0, freeze_every: float = 1.0) -> dict:
    if rate is None:
        capacity = await measure(server.url, capacity_concurrency, 15)
        rate = round(fraction * capacity.throughput(), 1)
        capacity_summary = capacity.summary()
    else:
        capacity_summary = None
    print(f"capacity {capacity_summary}; soaking at {rate} requests/s for {minutes} min", flush=True)
    rss_at_start = server.rss()
    load = Load(server.url, concurrency=64, rate=rate, seed=1)
    total = warmup + minutes * 60
    samples = []
    t0 = time.monotonic()
    last = (t0, cpu_steal())

    def sample() -> dict:
        # steal: the share of the machine's CPUs the hypervisor took since the last sample; stalls and the
        # bursts of requests they cause come with it (docs/reliability.md)
        nonlocal last
        now, steal = time.monotonic(), cpu_steal()
        share = (steal - last[1]) / max(1e-9, (now - last[0]) * (psutil.cpu_count() or 1))
        last = (now, steal)
        return {"t_s": round(now - t0, 1), "rss_mib": round(server.rss() / 2**20, 1),
                "worker_rss_mib": round(worker_rss(server) / 2**20, 1), "cpu_steal_pct": round(100 * share, 1)}

    with freezing(server, freeze_ms, freeze_every) as freezes:
        runner = asyncio.create_task(load.run(total))
        while not runner.done():
            samples.append(sample())
            await asyncio.wait({runner}, timeout=10)
        stats = runner.result()
    samples.append(sample())
    after_warmup = next(s for s in samples if s["t_s"] >= warmup)
    end = samples[-1]
    growth = (end["rss_mib"] - after_warmup["rss_mib"]) / after_warmup["rss_mib"]
    worker_growth = (end["worker_rss_mib"] - after_warmup["worker_rss_mib"]) / after_warmup["worker_rss_mib"]
    measured = stats.window(warmup, total)
    errors = len([r for r in stats.results if r.status != 200])
    return {
        "minutes": minutes,
        "warmup_s": warmup,
        "capacity": capacity_summary,
        "rate_per_s": rate,
        "freezes": {"ms": freeze_ms, "every_s": freeze_every, "count": len(freezes)} if freeze_ms else None,
        "fraction_of_capacity": fraction,
        "all": stats.summary(),
        "after_warmup": measured.summary(),
        "by_kind": {k: len([r for r in stats.results if r.kind == k]) for k in sorted({r.kind for r in stats.results})},
        "errors": errors,
        # When and what: errors that come in bursts point at a stall, spread-out ones at a tight limit.
        "not_ok_first_100": [{"t_s": round(r.start, 3), "latency_ms": round(r.latency * 1000, 1), "status": r.status,
                              "kind": r.kind, "error": r.error} for r in stats.results if r.status != 200][:100],
        "rss_mib": {"at_start": round(rss_at_start / 2**20, 1), "after_warmup": after_warmup["rss_mib"],
                    "end": end["rss_mib"], "max": max(s["rss_mib"] for s in samples),
                    "growth_after_warmup": round(growth, 4)},
        "worker_rss_mib": {"after_warmup": after_warmup["worker_rss_mib"], "end": end["worker_rss_mib"],
                           "growth_after_warmup": round(worker_growth, 4)},
        "cpu_steal_pct": {"max_10s": max(s["cpu_steal_pct"] for s in samples[1:]),
                          "mean": round(sum(s["cpu_steal_pct"] for s in samples[1:]) / max(1, len(samples) - 1), 1)},
        "rss_samples": samples,
        "checks": {"zero errors": errors == 0, f"RSS growth under {MAX_GROWTH:.0%}": growth < MAX_GROWTH},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--fraction", type=float, default=0.5, help="of measured capacity")
    parser.add_argument("--rate", type=float, help="requests/s (skips the capacity measurement)")
    parser.add_argument("--warmup", type=float, default=60)
    parser.add_argument("--capacity-concurrency", type=int, default=2, help="the saturating concurrency (reliability.overload)")
    parser.add_argument("--freeze-ms", type=float, default=0, help="freeze the worker this long (default: never)")
    parser.add_argument("--freeze-every", type=float, default=1.0, help="seconds between freezes")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    with serving() as server:
        result = asyncio.run(soak(server, args.minutes, args.fraction, args.warmup, args.capacity_concurrency, args.rate,
                                  args.freeze_ms, args.freeze_every))
        result["checks"]["ready at the end"] = server.ready()
    result["passed"] = all(result["checks"].values())
    return finish("soak", result, args.out, hide=("rss_samples",))


if __name__ == "__main__":
    sys.exit(main())
