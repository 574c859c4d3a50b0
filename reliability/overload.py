"""Overload: find the concurrency that saturates the service, drive it at 4x that, check it sheds load and recovers.

    python -m reliability.overload                  # starts its own server (about 3 minutes)
    python -m reliability.overload --url URL        # a server you started

1. Closed-loop load with the mixed requests of reliability/load.py at each concurrency in --levels:
   throughput and latency. Saturation: the smallest concurrency reaching 95 % of the best throughput.
2. --overload-seconds at 4x that concurrency. Pass: load is shed (429/503 answers), every other answer is
   200, no request goes unanswered (no client timeout or connection error), /readyz stays 200, and no
   answer takes longer than --max-latency.
3. The load stops; single requests probe until three in a row answer 200 as fast as at concurrency 1
   (within 3x its p99, at least 50 ms). Pass: within 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time

import aiohttp

from reliability.load import Load, measure, probe_until_normal
from reliability.report import bentoml_config, finish, traffic_config
from reliability.server import serving

RECOVER_WITHIN_S = 2.0


async def readyz_probe(url: str, stop: asyncio.Event, every: float = 0.5) -> list[tuple[int, float]]:
    """(status, seconds) of GET /readyz every `every` s until `stop`; status 0 when it did not answer in 2 s."""
    out = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while not stop.is_set():
            started = time.monotonic()
            try:
                async with session.get(url + "/readyz") as r:
                    out.append((r.status, time.monotonic() - started))
            except (aiohttp.ClientError, asyncio.TimeoutError):
                out.append((0, time.monotonic() - started))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
    return out


async def overload(url: str, levels: list[int], seconds: float, overload_seconds: float, max_latency: float) -> dict:
    curve = []
    for c in levels:
        stats = await measure(url, c, seconds)
        curve.append({"concurrency": c, **stats.summary()})
        print(f"  concurrency {c:>3}: {json.dumps(stats.summary())}", flush=True)
    best = max(p["ok_per_s"] for p in curve)
    saturating = next(p["concurrency"] for p in curve if p["ok_per_s"] >= 0.95 * best)
    baseline = curve[0]
    normal_latency = max(3 * baseline["p99_ms"] / 1000, 0.05)

    c = 4 * saturating
    print(f"saturation at concurrency {saturating} ({best} ok/s); overloading at {c} for {overload_seconds:.0f} s", flush=True)
    load = Load(url, c)
    stop = asyncio.Event()
    probe = asyncio.create_task(readyz_probe(url, stop))
    stats = await load.run(overload_seconds)
    stopped_at = load.t0 + overload_seconds  # clients stop sending here; the requests in flight still finish
    probing_from = time.monotonic()
    recovery = await probe_until_normal(url, normal_latency)
    recovered_after = None if recovery is None else round(probing_from - stopped_at + recovery, 3)
    stop.set()
    ready = await probe
    shed = sum(n for s, n in stats.by_status.items() if s in ("429", "503"))
    unanswered = sum(n for s, n in stats.by_status.items() if s.startswith("error:"))
    result = {
        "curve": curve,
        "saturating_concurrency": saturating,
        "best_ok_per_s": best,
        "overload": {
            "concurrency": c,
            **stats.summary(),
            "shed_fraction": round(shed / max(1, len(stats.results)), 3),
            "unanswered": unanswered,
            "other_errors": len([r for r in stats.failed if r.status]),
            "readyz": {"probes": len(ready), "not_200": sum(1 for s, _ in ready if s != 200),
                       "max_ms": round(max((t for _, t in ready), default=0) * 1000, 1)},
        },
        "recovery": {"normal_latency_ms": round(normal_latency * 1000, 1),
                     "seconds_to_normal_after_load_stopped": recovered_after},
    }
    o = result["overload"]
    checks = {
        "sheds load (429/503 seen)": shed > 0,
        "every other answer is 200": o["other_errors"] == 0,
        "no request unanswered": unanswered == 0,
        f"no answer slower than {max_latency} s": stats.max_latency() <= max_latency,
        "/readyz 200 throughout": o["readyz"]["not_200"] == 0,
        f"normal again within {RECOVER_WITHIN_S} s": recovered_after is not None and recovered_after <= RECOVER_WITHIN_S,
    }
    result["checks"] = checks
    result["passed"] = all(checks.values())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url")
    parser.add_argument("--levels", default="1,2,4,8,16,32", help="concurrencies to measure (comma-separated)")
    parser.add_argument("--seconds", type=float, default=10, help="measurement per level")
    parser.add_argument("--overload-seconds", type=float, default=30)
    parser.add_argument("--max-latency", type=float, default=10.0, help="slowest acceptable answer under overload (s)")
    parser.add_argument("--out", help="JSON results file (default reliability/results/overload-<date>.json)")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    print(f"traffic settings: service/service.py {traffic_config()} {bentoml_config() or ''}")

    def go(url: str) -> dict:
        return asyncio.run(overload(url, levels, args.seconds, args.overload_seconds, args.max_latency))

    if args.url:
        result = go(args.url)
    else:
        with serving() as server:
            result = go(server.url)
            result["server_ready_after"] = server.ready()
            result["passed"] = result["passed"] and result["server_ready_after"]
    return finish("overload", result, args.out, hide=("curve",))


if __name__ == "__main__":
    sys.exit(main())
