"""What each patch of upstream internals is worth: the service with and without it (SERVICE_SKIP_PATCHES), side by side, alternating.

    python -m harness.ab --skip door                 # one patch: the default cells and the flood, 3 rounds
    python -m harness.ab --all                       # the A/A run, then every patch in service/upstream's SKIPPABLE
    python -m harness.ab --skip none                 # the same server twice (A/A): the noise of this host
    python -m harness.ab --env-b SERVICE_PREDICTION_STATS=0   # side B with a setting changed

Side A is the service in its default configuration, side B the same with SERVICE_SKIP_PATCHES=<patch> (or with
--env-b); both run at once. Each round runs every wrk cell (closed loop) and then a flood of the request mix (open
loop at three times A's capacity, from the Python driver) on both sides, the side that goes first alternating.
Reported per measure: A's and B's median over the rounds, and B/A in every round. A patch pays when every round
favours A by more than the noise: with --all, the spread of B/A of that run's own A/A (two identical servers,
per measure: its largest |B/A - 1|); otherwise 5 %. Results: harness/results/ab-<patch>-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

from harness import report, wrk
from testkit import payloads
from testkit.driver import Driver, go
from testkit.server import parse_env, start_service

CELLS = [("temperature", 16), ("digit", 64), ("digits64", 16), ("digit_image200", 64)]
# measure -> True when larger is better
MEASURES = {"rps": True, "p99_ms": False}
FLOOD_MEASURES = {"goodput_per_s": True, "admitted_p99_ms": False, "refused_p99_ms": False, "refused_max_ms": False}


async def flood(url: str, rate: float, seconds: float) -> dict:
    driver = Driver(url, payloads.request_mix(), seed=2)
    records = await driver.run(seconds, rate=rate, prewarm=32)
    s = records.summary()
    return {"goodput_per_s": round(records.ok_done_per_s(0, driver.stopped_at), 1),
            "admitted_p99_ms": s["ok_latency_ms"]["p99"], "refused_p99_ms": s["refused_latency_ms"]["p99"],
            "refused_max_ms": s["refused_latency_ms"]["max"], "refused": s["refused_429"],
            "transport_errors": s["transport_errors"]}


NOISE = 0.05


def compare(rows: list[dict], key: str, better_high: bool, noise: float = NOISE) -> dict:
    """A's and B's median of `key` over rounds, B/A per round, and whether every round favours A by more than `noise`
    (the patch pays), favours B by more than `noise` (it costs), or neither (noise)."""
    rounds = sorted({r["round"] for r in rows})
    a = {r["round"]: r[key] for r in rows if r["side"] == "A" and r[key] is not None}
    b = {r["round"]: r[key] for r in rows if r["side"] == "B" and r[key] is not None}
    ratios = [round(b[i] / a[i], 3) for i in rounds if i in a and i in b and a[i]]
    if not ratios:
        return {"A": None, "B": None, "B_over_A": [], "verdict": "no data"}
    favours_a = [(x < 1 - noise) if better_high else (x > 1 + noise) for x in ratios]
    favours_b = [(x > 1 + noise) if better_high else (x < 1 - noise) for x in ratios]
    verdict = "pays" if all(favours_a) else "costs" if all(favours_b) else "noise"
    return {"A": statistics.median(a.values()), "B": statistics.median(b.values()), "B_over_A": ratios,
            "verdict": verdict}


def ab(patch: str, rounds: int, duration: float, flood_seconds: float, cells: list[tuple[str, int]],
       env_b: dict[str, str] | None = None, noise: dict[str, float] | None = None) -> dict:
    """Side A as configured, side B without `patch` (or with `env_b`); B/A judged against `noise` per measure (default
    NOISE for every measure: pass the A/A run's spread)."""
    ps = payloads.bench_payloads()
    bodies = payloads.write_bodies(Path(tempfile.mkdtemp(prefix="ab-bodies-")), {n: ps[n] for n, _ in cells})
    skip = "" if patch == "none" else patch
    servers = {"A": start_service(), "B": start_service(env=env_b or {"SERVICE_SKIP_PATCHES": skip})}
    rows, floods = [], []
    try:
        for s in servers.values():
            s.wait_ready()
        for name, _ in cells:
            for s in servers.values():
                wrk.run(s.url, ps[name], bodies[name], 16, 2)  # warm-up, not recorded
        capacity = go(Driver(servers["A"].url, payloads.request_mix()).run(6, clients=64)).window(2, 6).ok_per_s()
        for r in range(rounds):
            print(f"round {r + 1}/{rounds}", flush=True)
            order = servers if r % 2 == 0 else dict(reversed(servers.items()))  # who goes first alternates
            for row in wrk.matrix(order, ps, bodies, cells, duration, 1):
                rows.append({**row, "round": r})
            for side in ("A", "B") if r % 2 == 0 else ("B", "A"):
                for s in servers.values():
                    s.wait_idle()
                result = go(flood(servers[side].url, 3 * capacity, flood_seconds))
                floods.append({"side": side, "round": r, **result})
                print(f"  {side} flood {result}", flush=True)
                asyncio.run(asyncio.sleep(2))  # the flood's queue drains
    finally:
        for s in servers.values():
            s.stop()
    noise = noise or {}
    out: dict = {"patch": patch, "env_b": env_b or {"SERVICE_SKIP_PATCHES": skip}, "noise": noise,
                 "capacity_mix_per_s": round(capacity, 1), "cells": {}, "flood": {}}
    for name, c in cells:
        cell = [row for row in rows if row["endpoint"] == name and row["concurrency"] == c]
        out["cells"][f"{name} c={c}"] = {k: compare(cell, k, hi, noise.get(k, NOISE)) for k, hi in MEASURES.items()}
    out["flood"] = {k: compare(floods, k, hi, noise.get(k, NOISE)) for k, hi in FLOOD_MEASURES.items()}
    out["runs"], out["flood_runs"] = rows, floods
    return out


def spread(aa: dict) -> dict[str, float]:
    """Per measure, the largest |B/A - 1| of an A/A run (two identical servers) over its cells and rounds: the noise
    a patch's every round must beat."""
    out: dict[str, float] = {}
    for measures in (*aa["cells"].values(), aa["flood"]):
        for key, compared in measures.items():
            worst = max((abs(r - 1) for r in compared["B_over_A"]), default=NOISE)
            out[key] = round(max(out.get(key, 0.0), worst), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    from service.upstream import SKIPPABLE

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--skip", choices=["none", *SKIPPABLE], help="the patch side B leaves out")
    which.add_argument("--all", action="store_true", help="the A/A run, then every skippable patch judged against its "
                       "spread, one after another")
    which.add_argument("--env-b", action="append", metavar="KEY=VALUE",
                       help="side B with this environment instead (e.g. SERVICE_PREDICTION_STATS=0)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5, help="seconds per wrk cell")
    parser.add_argument("--flood-seconds", type=float, default=10)
    parser.add_argument("--cells", nargs="+", default=[f"{n}:{c}" for n, c in CELLS], help="endpoint:connections")
    args = parser.parse_args(argv)
    wrk.wrk_path()
    cells = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cells]
    env_b = parse_env(args.env_b) if args.env_b else None
    noise: dict[str, float] = {}
    for patch in (["none", *SKIPPABLE] if args.all else ["env" if env_b else args.skip]):
        print(f"== {patch}", flush=True)
        result = ab(patch, args.rounds, args.duration, args.flood_seconds, cells, env_b, noise)
        if patch == "none" and args.all:
            noise = spread(result)
            print(f"  A/A spread per measure: {noise}", flush=True)
        name = "-".join(f"{k}={v}" for k, v in env_b.items()).lower() if env_b else patch
        path = report.save(f"ab-{name}", result)
        summary = {"cells": result["cells"], "flood": result["flood"]}
        for where, measures in summary.items():
            for name, values in measures.items():
                print(f"  {where} {name}: {values}")
        print(f"results: {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
