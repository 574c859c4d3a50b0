"""Worker counts side by side (`python -m harness.bench --workers 1 2`): the closed-loop matrix with each count, each worker's share of every run, and repeated rounds of the cells that decide the default.

    .venv/bin/python -m harness.bench --workers 1 2                  # ~25 min on 2 cores
    .venv/bin/python -m harness.bench --workers 1 2 --duration 3 --rounds 1 --share-rounds 2   # a quick look

One `bentoml serve .` per count, all running at once (the count pinned with BentoML's
services.ThermoDigits.workers); wrk drives one at a time, the server that goes first alternating cell by cell,
each run once every server is idle (as harness.bench's A/B matrix). With more than one worker, every run also
counts each worker's answers in the access log. Then --share-rounds rounds of /digit at 64 connections and
/temperature at 16 and 64, alternating: at 64 connections every worker of a multi-worker server answers at least
35 % of each round (two workers; 70 % of an even share in general), and at /digit c=64 and /temperature c=16 the
most workers answer at least as many requests per second as one. Results: harness/results/bench-workers-<date>.json; the section "Workers" of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import report, wrk
from testkit import payloads
from testkit.server import Server, parse_env, start_service

SHARE = 0.7  # of an even share: 35 % each with two workers
DECIDING = (("digit", 64), ("temperature", 16), ("temperature", 64))  # the cells of the repeated rounds
SHARED = (("digit", 64), ("temperature", 64))  # 64 connections: each worker's share is checked
FASTER = (("digit", 64), ("temperature", 16))  # the most workers must answer at least as much as one


def side(workers: int) -> str:
    return f"{workers} worker{'s' if workers > 1 else ''}"


def measured(server: Server, workers: int, payload: payloads.Payload, body: Path, c: int, seconds: float,
             name: str) -> dict:
    """One wrk run, with each worker's 2xx answers from the access log when there are several."""
    start = server.log_size()
    res = wrk.run(server.url, payload, body, c, seconds, name, server.cpu_seconds).as_dict()
    if workers > 1:
        deadline = time.monotonic() + 10  # the supervisor copies the workers' logs into ours with a delay
        while (sum((counts := server.answers_by_worker(start, payload.path)).values()) < res["ok_2xx"]
               and time.monotonic() < deadline):
            time.sleep(0.1)
        res["answers_by_worker"] = {str(k): v for k, v in sorted(counts.items())}
        total = sum(counts.values())
        res["least_share"] = round(min(counts.get(i, 0) for i in range(1, workers + 1)) / total, 3) if total else 0.0
    return res


def alternating(servers: dict[int, Server], ps: dict, bodies: dict, cells: list[tuple[str, int]], seconds: float,
                rounds: int, label: str) -> list[dict]:
    rows = []
    counts = list(servers)
    for r in range(rounds):
        for i, (name, c) in enumerate(cells):
            for workers in counts if (i + r) % 2 == 0 else counts[::-1]:
                for s in servers.values():
                    s.wait_idle()
                res = measured(servers[workers], workers, ps[name], bodies[name], c, seconds, side(workers))
                rows.append({**res, "workers": workers, "round": r, "part": label})
                shares = f"  least share {res['least_share']:.0%}" if "least_share" in res else ""
                print(f"  {side(workers):9s} {name:14s} c={c:<3d} {res['rps']:8.1f} 2xx/s  p50 {res['p50_ms']:7.2f}  "
                      f"p99 {res['p99_ms']:7.2f} ms  non-2xx {res['non_2xx']}  errors {res['transport_errors']}{shares}",
                      flush=True)
    return rows


def table(rows: list[dict]) -> list[dict]:
    """Medians over rounds per (workers, endpoint, concurrency)."""
    out = []
    for key in sorted({(r["endpoint"], r["concurrency"], r["workers"]) for r in rows}):
        group = [r for r in rows if (r["endpoint"], r["concurrency"], r["workers"]) == key]
        med = lambda k: round(statistics.median(g[k] for g in group), 3)  # noqa: E731
        out.append({"endpoint": key[0], "concurrency": key[1], "workers": key[2], "rounds": len(group),
                    "rps": med("rps"), "images_per_s": med("images_per_s"), "p50_ms": med("p50_ms"),
                    "p99_ms": med("p99_ms"), "non_2xx": sum(g["non_2xx"] for g in group),
                    "transport_errors": sum(g["transport_errors"] for g in group),
                    "least_share": min((g["least_share"] for g in group if "least_share" in g), default=None)})
    return out


def checks(rows: list[dict], counts: list[int]) -> dict[str, bool]:
    most, deciding = max(counts), [r for r in rows if r["part"] == "rounds"]
    out = {"no answer but 2xx, no transport error": all(r["non_2xx"] == 0 and r["transport_errors"] == 0 for r in rows)}
    if most > 1:
        least = SHARE / most
        for name, c in SHARED:
            out[f"every round: each of {most} workers answers >= {least:.0%}, {name} c={c}"] = all(
                r["least_share"] >= least for r in deciding
                if r["workers"] == most and (r["endpoint"], r["concurrency"]) == (name, c))
    if 1 in counts and most > 1:
        for name, c in FASTER:
            pairs = {}
            for r in deciding:
                if (r["endpoint"], r["concurrency"]) == (name, c):
                    pairs.setdefault(r["round"], {})[r["workers"]] = r["rps"]
            out[f"every round: {side(most)} >= 1 worker, {name} c={c}"] = bool(pairs) and all(
                p[most] >= p[1] for p in pairs.values())
    return out


def run(args: argparse.Namespace) -> int:
    wrk.wrk_path()
    env = parse_env(args.env)
    counts = sorted(set(args.workers))
    ps = {n: p for n, p in payloads.bench_payloads().items() if n in args.endpoints}
    logdir = Path(tempfile.mkdtemp(prefix="harness-scaling-"))
    bodies = payloads.write_bodies(logdir / "bodies", ps)
    t0 = time.perf_counter()
    servers = {w: start_service(workers=w, env=env, bentoml_config=args.bentoml_config, logdir=logdir) for w in counts}
    try:
        for s in servers.values():
            s.wait_ready()
        time.sleep(2)
        for name in ps:  # warm every server once per endpoint; not recorded
            for s in servers.values():
                wrk.run(s.url, ps[name], bodies[name], 16, args.warmup)
        print(f"1/2 the matrix, {args.rounds} round(s), workers {counts}", flush=True)
        rows = alternating(servers, ps, bodies, payloads.cells(args.concurrency, args.digits64_concurrency, list(ps)),
                           args.duration, args.rounds, "matrix")
        print(f"2/2 {args.share_rounds} rounds of {', '.join(f'{n} c={c}' for n, c in DECIDING)}", flush=True)
        deciding = [(n, c) for n, c in DECIDING if n in ps]
        rows += alternating(servers, ps, bodies, deciding, args.share_seconds, args.share_rounds, "rounds")
        memory = {side(w): s.rss_mib() for w, s in servers.items()}
    finally:
        for s in servers.values():
            s.stop()
    results = {"command": ".venv/bin/python -m harness.bench" + "".join(f" {a}" for a in sys.argv[1:]),
               "workers": counts, "duration_s": args.duration, "rounds": args.rounds, "share_rounds": args.share_rounds,
               "share_seconds": args.share_seconds, "cpu_hogs": args.hogs, "runs": rows, "table": table(rows),
               "memory_after_mib": memory, "elapsed_s": round(time.perf_counter() - t0, 1)}
    results["checks"] = checks(rows, counts)
    results["passed"] = all(results["checks"].values())
    service = report.service_settings(env, None, args.bentoml_config)
    service["workers"] = counts
    path = report.save("bench-workers", results, args.json, service)
    if args.markdown:
        report.render_all(args.markdown, workers=path)  # with the newest bench and peers runs
    print(json.dumps(results["checks"], indent=1))
    print(f"results: {path}{f' and {args.markdown}' if args.markdown else ''}\n{'PASS' if results['passed'] else 'FAIL'}")
    return 0 if results["passed"] else 1
