"""Overload: closed-loop load must never be refused; an open-loop flood at 3x capacity must be served at capacity, refused fast, and forgotten fast.

    python -m harness.overload                       # starts its own server (about 4 minutes on 2 cores)
    python -m harness.overload --url URL --endpoint digit --seconds 10

1. Closed loop (wrk) at 1, 16, 64 and 256 connections on /temperature, /digit and /digit/image (28x28 and
   200x200 uploads), and at 16 on /digits (64 images). Goals: no transport error, no answer but 2xx or 429, and
   no cell with refusals whose goodput (2xx/s) is below 90 % of the best cell of its endpoint (refusing must
   never cost goodput); with the default SERVICE_QUEUE_FLOOR (256), no refusal at all.
2. Service time: the p50 latency of the mix (or --endpoint) at concurrency 1 (Python driver, closed loop).
   Capacity: the best 2xx/s of the same closed loop at --capacity-clients.
3. Flood: open loop (testkit.driver) at --rate-multiple (3) x capacity for --seconds (30), /readyz probed
   every 0.5 s. Goals: goodput (2xx/s) >= 90 % of capacity; p99 latency of the admitted (2xx) requests
   <= the service's queue_target_s + one service time; p99 and max latency of refusals (429) <= 10 ms;
   every request answered; /readyz always 200.
4. Recovery: from the moment the flood stops sending, single requests every 50 ms until three in a row
   answer 200 within normal latency (3 x the p99 at concurrency 1, at least 20 ms). Goal: <= 1 s.
5. Retry-After: the same flood from --sources (100) clients that honour Retry-After (a refused client sends
   nothing for the seconds it says). Goals: the load they send falls to about capacity (what they hold back is
   counted), and goodput >= 90 % of capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from harness import wrk
from testkit import payloads
from testkit.host import cpu_hogs
from testkit.driver import Driver, go
from harness.probe import probe, recovery
from harness.report import finish, service_settings
from testkit.server import Server, serving

GOODPUT, REFUSAL_MS, RECOVER_S = 0.90, 10.0, 1.0


def refusals_cost_no_goodput(rows: list[dict]) -> dict[str, bool]:
    """Per endpoint: every cell that refused kept at least GOODPUT of the endpoint's best goodput (2xx/s)."""
    best = {}
    for r in rows:
        best[r["endpoint"]] = max(best.get(r["endpoint"], 0.0), r["rps"])
    return {e: all(r["rps"] >= GOODPUT * best[e] for r in rows if r["endpoint"] == e and r["refused_429"])
            for e in best}


def closed_loop_matrix(server: Server, seconds: float, cells: list[tuple[str, int]]) -> list[dict]:
    ps = payloads.bench_payloads()
    bodies = payloads.write_bodies(Path(tempfile.mkdtemp(prefix="overload-bodies-")), ps)
    return [{k: r[k] for k in ("endpoint", "concurrency", "requests", "rps", "p50_ms", "p99_ms", "max_ms", "non_2xx",
                               "refused_429", "transport_errors", "error_detail", "client_cpu_s")}
            for r in wrk.matrix({"service": server}, ps, bodies, cells, seconds)]


async def flood(url: str, mix: list, endpoint: str, rate_multiple: float, seconds: float, capacity_clients: list[int],
                capacity_seconds: float, queue_target_s: float, sources: int = 1000) -> dict:
    single = await Driver(url, mix).run(capacity_seconds, clients=1)
    service_s = single.summary()["ok_latency_ms"]
    capacity = {}
    for c in capacity_clients:
        records = await Driver(url, mix).run(capacity_seconds + 2, clients=c)
        capacity[c] = records.window(2, capacity_seconds + 2).summary()  # the first 2 s warm up
        print(f"  closed loop, {c} clients: {capacity[c]['ok_per_s']} 2xx/s", flush=True)
    best = max(s["ok_per_s"] for s in capacity.values())
    rate = rate_multiple * best
    print(f"capacity {best} 2xx/s, service time (p50 at c=1) {service_s['p50']} ms; flooding at {rate:.0f}/s "
          f"for {seconds:g} s", flush=True)

    driver, stop = Driver(url, mix, seed=2), asyncio.Event()
    readyz = asyncio.create_task(probe(url, stop))
    runner = asyncio.create_task(driver.run(seconds, rate=rate, prewarm=32))
    while driver.stopped_sending is None:
        await asyncio.sleep(0.01)
    await driver.stopped_sending.wait()
    stop.set()  # /readyz is probed while the flood lasts
    normal_s = max(3 * service_s["p99"] / 1000, 0.02)
    probe_payload = next(p for p, _ in mix if p.name == ("digit" if endpoint == "mix" else endpoint))
    recovered_after, probes = await recovery(url, probe_payload, normal_s)
    records = await runner
    ready = await readyz
    s = records.summary()
    goodput = records.ok_done_per_s(0, driver.stopped_at)
    admitted_goal_ms = 1000 * queue_target_s + service_s["p50"]
    result = {
        "service_time_ms": service_s, "capacity_by_clients": capacity, "capacity_ok_per_s": best,
        "flood": {"rate_per_s": round(rate, 1), "rate_multiple": rate_multiple, **s,
                  "goodput_2xx_per_s": round(goodput, 1),  # answered while the flood lasted
                  "goodput_fraction": round(goodput / best, 3) if best else None, "by_kind": records.by_kind()},
        "flood_not_2xx_first_100": records.not_ok(100),
        "readyz": {"probes": len(ready), "not_200": sum(1 for _, st, _ in ready if st != 200),
                   "max_ms": round(1000 * max((t for _, _, t in ready), default=0), 1)},
        "recovery": {"normal_latency_ms": round(1000 * normal_s, 1), "seconds_after_flood_stopped": recovered_after,
                     "probes": probes[:100]},
        "goals": {"goodput_fraction": GOODPUT, "admitted_p99_ms": round(admitted_goal_ms, 2),
                  "refused_p99_and_max_ms": REFUSAL_MS, "recovery_s": RECOVER_S},
    }
    print(f"Retry-After: the same flood from {sources} clients that honour it", flush=True)
    await asyncio.sleep(2)  # let the worker finish what the first flood left
    polite = Driver(url, mix, seed=3, honour_retry_after=True)
    records = await polite.run(seconds, rate=rate, sources=sources)
    p = records.summary()
    polite_goodput = records.ok_done_per_s(0, polite.stopped_at)
    result["polite_flood"] = {
        "sources": sources, "offered_per_s": round(rate, 1), "sent_per_s": round(len(records) / seconds, 1),
        "held_back": records.extra["held_back"], "goodput_2xx_per_s": round(polite_goodput, 1),
        "goodput_fraction": round(polite_goodput / best, 3) if best else None, **p}
    f, refused = result["flood"], s["refused_latency_ms"]
    result["checks"] = {
        f"goodput >= {GOODPUT:.0%} of capacity": f["goodput_fraction"] is not None and f["goodput_fraction"] >= GOODPUT,
        f"admitted p99 <= queue target + service time ({admitted_goal_ms:.1f} ms)":
            s["ok_latency_ms"]["p99"] is not None and s["ok_latency_ms"]["p99"] <= admitted_goal_ms,
        f"refusals p99 and max <= {REFUSAL_MS:g} ms": refused["max"] is None or refused["max"] <= REFUSAL_MS,
        "every request answered": s["transport_errors"] == 0,
        "/readyz 200 throughout": result["readyz"]["not_200"] == 0 and bool(ready),
        f"normal again within {RECOVER_S:g} s": recovered_after is not None and recovered_after <= RECOVER_S,
        f"clients honouring Retry-After: goodput >= {GOODPUT:.0%} of capacity":
            result["polite_flood"]["goodput_fraction"] is not None and result["polite_flood"]["goodput_fraction"] >= GOODPUT,
        "clients honouring Retry-After send less than they are asked to":
            result["polite_flood"]["held_back"] > 0 and p["refused_429"] < s["refused_429"],
    }
    return result


def run(server: Server, args) -> dict:
    result: dict = {}
    if args.wrk_seconds > 0:
        print("1. closed loop (wrk)", flush=True)
        cells = payloads.cells(args.concurrency, args.digits64_concurrency)
        result["closed_loop"] = closed_loop_matrix(server, args.wrk_seconds, cells)
    print("2. service time, capacity, flood, recovery (Python driver)", flush=True)
    queue_target_s = service_settings()["settings"]["queue_target_s"]
    result.update(go(flood(server.url, payloads.mix_or_endpoint(args.endpoint), args.endpoint, args.rate_multiple,
                           args.seconds, args.capacity_clients, args.capacity_seconds, queue_target_s, args.sources)))
    if "closed_loop" in result:
        rows = result["closed_loop"]
        costless = refusals_cost_no_goodput(rows)
        result["checks"] = {"closed loop: no answer but 2xx or 429": sum(r["non_2xx"] - r["refused_429"] for r in rows) == 0,
                            "closed loop: no transport error": sum(r["transport_errors"] for r in rows) == 0,
                            f"closed loop: refusals cost no goodput (>= {GOODPUT:.0%} of the endpoint's best)":
                                all(costless.values()),
                            **result["checks"]}
        result["closed_loop_refusals"] = sum(r["refused_429"] for r in rows)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a server you started (default: start `bentoml serve .`)")
    parser.add_argument("--endpoint", default="mix", choices=["mix", *payloads.bench_payloads()],
                        help="what the flood sends: the request mix (default) or one benchmark payload")
    parser.add_argument("--rate-multiple", type=float, default=3.0, help="flood rate as a multiple of capacity")
    parser.add_argument("--seconds", type=float, default=30, help="length of the flood")
    parser.add_argument("--capacity-clients", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--capacity-seconds", type=float, default=10, help="per capacity (and service time) run")
    parser.add_argument("--sources", type=int, default=100, help="clients of the Retry-After flood (step 5)")
    parser.add_argument("--wrk-seconds", type=float, default=5, help="per closed-loop wrk cell (0: skip step 1)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--digits64-concurrency", type=int, nargs="*", default=[16])
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="pin the worker count (default: the service's own); several: the whole run with each, in "
                        "turn, in one results file")
    parser.add_argument("--hogs", type=int, default=0, help="processes each keeping one core busy for the whole run "
                        "(1 on two cores: a host half as fast); started and stopped here")
    parser.add_argument("--out", help="JSON results file (default harness/results/overload-<date>.json)")
    args = parser.parse_args(argv)
    if args.wrk_seconds > 0:
        wrk.wrk_path()
    with cpu_hogs(args.hogs):
        return run_all(args)


def run_all(args: argparse.Namespace) -> int:
    hide = ("closed_loop", "recovery", "capacity_by_clients", "flood_not_2xx_first_100")
    if args.url:
        result = run(Server.external(args.url), args)
    else:
        by_workers = {}
        for workers in args.workers or [None]:
            print(f"== workers: {workers or 'the default'}", flush=True)
            with serving(workers=workers) as server:
                by_workers[len(server.workers())] = result = run(server, args)
                result["checks"]["ready at the end"] = server.ready()
        if len(by_workers) > 1:  # side by side: each count's figures, its checks named after it
            result = {"by_workers": by_workers, "checks": {f"{w} worker(s): {name}": ok for w, r in by_workers.items()
                                                           for name, ok in r["checks"].items()}}
            hide = ("by_workers",)
    result["cpu_hogs"] = args.hogs
    result["passed"] = all(result["checks"].values())
    workers = args.workers[0] if args.workers and len(args.workers) == 1 else None
    service = service_settings(workers=workers, url=args.url)
    if args.workers and len(args.workers) > 1:
        service["workers"] = sorted(args.workers)
    return finish("overload", result, args.out, hide=hide, service=service)


if __name__ == "__main__":
    sys.exit(main())
