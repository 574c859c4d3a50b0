"""Soak: the request mix, open loop at a fraction of measured capacity for a long time; no errors, and memory must not creep.

    python -m harness.soak --minutes 10                          # starts its own server (about 11.5 minutes)
    python -m harness.soak --minutes 3 --warmup 30 --freeze-ms 300   # the worker frozen 300 ms every second

1. Capacity: the mix, closed loop with --capacity-clients for --capacity-seconds (2xx answers per second),
   unless --rate is given.
2. Open loop (testkit.driver) at --fraction of that rate for --warmup s, then for --minutes; every
   --sample-every s the resident memory (RSS) of the server's process tree and of each worker, and the
   share of CPU the hypervisor took (steal). --freeze-ms N freezes the workers (SIGSTOP ... SIGCONT) for
   N ms every --freeze-every s, as a host that deschedules them does: the requests sent meanwhile reach
   them all at once.
3. Pass: every answer is a 2xx (no 429, 5xx, timeout or connection error), and RSS at the end is less
   than 10 % above RSS at the end of the warm-up. When and what each non-2xx answer was is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import psutil

from testkit.driver import Driver, go
from testkit.host import freezing
from testkit.payloads import request_mix
from harness.report import cpu_steal_s, finish, service_settings
from testkit.server import Server, serving

MAX_GROWTH = 0.10


def growth(samples: list[dict], warmup_s: float) -> dict:
    """RSS after the warm-up and at the end, for the tree and each worker, with each worker's least-squares slope."""
    later = [s for s in samples if s["t_s"] >= warmup_s] or samples[-1:]
    first, end = later[0], samples[-1]
    workers = []
    for w in range(min(len(s["worker_rss_mib"]) for s in later)):
        ts, ys = [s["t_s"] / 60 for s in later], [s["worker_rss_mib"][w] for s in later]
        mt, my = sum(ts) / len(ts), sum(ys) / len(ys)
        var = sum((t - mt) ** 2 for t in ts)
        slope = sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / var if var else 0.0
        workers.append({"after_warmup_mib": ys[0], "end_mib": ys[-1], "max_mib": max(ys),
                        "growth": round((ys[-1] - ys[0]) / ys[0], 4) if ys[0] else None,
                        "slope_mib_per_min": round(slope, 3)})
    return {"tree_mib": {"at_start": samples[0]["rss_mib"], "after_warmup": first["rss_mib"], "end": end["rss_mib"],
                         "max": max(s["rss_mib"] for s in samples),
                         "growth_after_warmup": round((end["rss_mib"] - first["rss_mib"]) / first["rss_mib"], 4)},
            "workers": workers}


async def soak(server: Server, seconds: float, warmup: float = 60, fraction: float = 0.5, rate: float | None = None,
               capacity_clients: int = 16, capacity_seconds: float = 15, freeze_ms: float = 0, freeze_every: float = 1.0,
               poisson: bool = False, sample_every: float = 10) -> dict:
    mix, capacity = request_mix(), None
    if rate is None:
        records = await Driver(server.url, mix).run(capacity_seconds + 2, clients=capacity_clients)
        capacity = records.window(2, capacity_seconds + 2).summary()  # the first 2 s warm up
        rate = round(fraction * capacity["ok_per_s"], 1)
    print(f"capacity {capacity and capacity['ok_per_s']} 2xx/s; soaking at {rate} requests/s for {seconds:g} s "
          f"after {warmup:g} s of warm-up", flush=True)
    t0, last = time.monotonic(), (time.monotonic(), cpu_steal_s() or 0.0)

    def sample() -> dict:
        nonlocal last
        now, steal = time.monotonic(), cpu_steal_s() or 0.0
        share = (steal - last[1]) / max(1e-9, (now - last[0]) * (psutil.cpu_count() or 1))
        last = (now, steal)
        return {"t_s": round(now - t0, 1), "rss_mib": round(server.rss() / 2**20, 1),
                "worker_rss_mib": server.rss_mib(), "cpu_steal_pct": round(100 * share, 1)}

    samples = [sample()]
    with freezing(lambda: [p.pid for p in server.workers()], freeze_ms, freeze_every) as freezes:
        runner = asyncio.create_task(Driver(server.url, mix, seed=1).run(warmup + seconds, rate=rate, poisson=poisson,
                                                                       prewarm=8))
        while not runner.done():
            await asyncio.wait({runner}, timeout=sample_every)
            samples.append(sample())
        records = runner.result()
    after = records.window(warmup, warmup + seconds)
    memory = growth(samples, warmup)
    failed = len(records) - int(records.ok.sum())
    steal = [s["cpu_steal_pct"] for s in samples[1:]] or [0.0]
    return {
        "seconds": seconds, "warmup_s": warmup, "capacity_clients": capacity_clients, "capacity": capacity,
        "fraction_of_capacity": fraction, "rate_per_s": rate, "poisson": poisson,
        "freezes": {"ms": freeze_ms, "every_s": freeze_every, "count": len(freezes)} if freeze_ms else None,
        "all": records.summary(), "after_warmup": after.summary(), "by_kind": records.by_kind(),
        "not_2xx": failed,
        "not_2xx_first_100": records.not_ok(100),  # errors in bursts point at a stall, spread-out ones at a limit
        "memory": memory,
        "cpu_steal_pct": {"max": max(steal), "mean": round(sum(steal) / len(steal), 1)},
        "rss_samples": samples,
        "checks": {"every answer 2xx": failed == 0,
                   f"RSS growth under {MAX_GROWTH:.0%}": memory["tree_mib"]["growth_after_warmup"] < MAX_GROWTH},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--fraction", type=float, default=0.5, help="of measured capacity (default 0.5)")
    parser.add_argument("--rate", type=float, help="requests/s (skips the capacity measurement)")
    parser.add_argument("--poisson", action="store_true", help="Poisson arrivals instead of evenly spaced ones")
    parser.add_argument("--warmup", type=float, default=60, help="seconds before memory growth counts (default 60)")
    parser.add_argument("--capacity-clients", type=int, default=16)
    parser.add_argument("--capacity-seconds", type=float, default=15)
    parser.add_argument("--sample-every", type=float, default=10, help="seconds between RSS samples")
    parser.add_argument("--freeze-ms", type=float, default=0, help="freeze the workers this long (default: never)")
    parser.add_argument("--freeze-every", type=float, default=1.0, help="seconds between freezes")
    parser.add_argument("--workers", type=int, default=None, help="pin the worker count (default: the service's own)")
    parser.add_argument("--out", help="JSON results file (default harness/results/soak-<date>.json)")
    args = parser.parse_args(argv)
    with serving(workers=args.workers) as server:
        result = go(soak(server, args.minutes * 60, args.warmup, args.fraction, args.rate, args.capacity_clients,
                         args.capacity_seconds, args.freeze_ms, args.freeze_every, args.poisson, args.sample_every))
        result["checks"]["ready at the end"] = server.ready()
    result["passed"] = all(result["checks"].values())
    return finish("soak", result, args.out, hide=("rss_samples", "not_2xx_first_100"),
                  service=service_settings(workers=args.workers))


if __name__ == "__main__":
    sys.exit(main())
