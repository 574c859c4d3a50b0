"""One command for the whole benchmark: compute floor, cold start, the A/B load matrix, memory and a soak; writes docs/benchmarks.md.

    .venv/bin/python -m benchmarks.run                 # defaults: about 13 minutes
    .venv/bin/python -m benchmarks.run --duration 3 --rounds 1 --soak 30 --cold-trials 1   # a quick look

Side A is the real service (`bentoml serve`, production mode); side B the bare Starlette baseline
(benchmarks/baseline.py under uvicorn). Both run at once with the same worker count; wrk drives one
at a time, alternating which goes first, so that drift on the machine hits both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import coldstart, compute, load, machine, payloads, report, servers, soak

REPO = Path(__file__).resolve().parents[1]
SIDES = ("service", "baseline")


def configured_workers() -> int:
    """The worker count the service's own configuration gives (imported in a throw-away process and model store)."""
    code = ("import os,tempfile; os.environ['BENTOML_HOME']=tempfile.mkdtemp(); "
            "from service.service import ThermoDigits; print(ThermoDigits.config.get('workers') or 1)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    workers = out.stdout.strip().splitlines()[-1]
    return 2 if workers == "cpu_count" else int(workers)  # cpu_count: this 2-core machine


def matrix(started: dict[str, servers.Server], ps: dict, bodies: dict, concurrencies: list[int], duration: float,
           rounds: int, warmup: float) -> list[dict]:
    """Every endpoint x concurrency x side, `rounds` times; the order of the two sides alternates cell by cell."""
    rows = []
    for name, p in ps.items():  # warm both sides once per endpoint; not recorded
        for side in SIDES:
            load.run(started[side].url, p, bodies[name], 16, warmup, side)
    cell = 0
    for r in range(rounds):
        for c in concurrencies:
            for name, p in ps.items():
                order = SIDES if (cell + r) % 2 == 0 else SIDES[::-1]
                cell += 1
                for side in order:
                    s = started[side]
                    for other in started.values():  # a slow cell can leave queued requests behind: let them finish
                        other.wait_idle()
                    res = load.run(s.url, p, bodies[name], c, duration, side, s.cpu_seconds)
                    rows.append({**res.as_dict(), "round": r})
                    print(f"  {side:8s} {name:11s} c={c:<3d} {res.rps:8.1f} req/s  p50 {res.p50_ms:7.2f}  "
                          f"p99 {res.p99_ms:7.2f}  max {res.max_ms:7.2f} ms  errors {res.errors}", flush=True)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Median over rounds of every figure (max: the largest), one row per side x endpoint x concurrency."""
    keys = sorted({(r["side"], r["endpoint"], r["concurrency"]) for r in rows}, key=lambda k: (k[1], k[2], k[0]))
    out = []
    for side, endpoint, c in keys:
        group = [r for r in rows if (r["side"], r["endpoint"], r["concurrency"]) == (side, endpoint, c)]
        med = lambda k: round(statistics.median(g[k] for g in group), 3)  # noqa: E731
        requests = sum(g["requests"] for g in group)
        out.append({
            "side": side, "endpoint": endpoint, "concurrency": c, "rounds": len(group),
            "rps": med("rps"), "images_per_s": med("images_per_s"),
            "p50_ms": med("p50_ms"), "p90_ms": med("p90_ms"), "p99_ms": med("p99_ms"),
            "max_ms": max(g["max_ms"] for g in group), "errors": sum(g["errors"] for g in group),
            "requests": requests,
            "server_cpu_ms_per_req": round(1000 * sum(g["server_cpu_s"] for g in group) / max(requests, 1), 3),
            "client_cores": round(sum(g["client_cpu_s"] for g in group) / sum(g["seconds"] for g in group), 3),
        })
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=8, help="seconds per wrk run (default 8)")
    ap.add_argument("--rounds", type=int, default=2, help="times the whole matrix is run (default 2)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--endpoints", nargs="+", default=list(payloads.all_payloads()), choices=list(payloads.all_payloads()))
    ap.add_argument("--workers", type=int, help="worker count for both sides (default: the service's configuration)")
    ap.add_argument("--warmup", type=float, default=2, help="seconds of unrecorded load per endpoint and side")
    ap.add_argument("--cold-trials", type=int, default=3, help="restarts timed with a populated model store")
    ap.add_argument("--soak", type=float, default=300, help="seconds of the memory soak at half capacity (0: skip)")
    ap.add_argument("--profile", nargs="*", default=["temperature", "digit", "digits64"], help="endpoints to profile with py-spy")
    ap.add_argument("--bentoml-config", default="", help="extra BENTOML_CONFIG_OPTIONS for the service, e.g. "
                    "'services.ThermoDigits.logging.access.enabled=false' (default: none, the service as configured)")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "latest.json")
    ap.add_argument("--markdown", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = ap.parse_args()

    load.wrk_path()
    t0 = time.perf_counter()
    workers = args.workers or configured_workers()
    # Keep the command in the report exactly as typed (relative to the repo root).
    command = ".venv/bin/python -m benchmarks.run" + "".join(f" {a}" for a in sys.argv[1:])
    results: dict = {"command": command, "machine": machine.describe(), "workers": workers,
                     "bentoml_config": args.bentoml_config,
                     "duration_s": args.duration, "rounds": args.rounds}
    if float(results["machine"]["loadavg_at_start"][0]) > 0.5:
        print(f"warning: load average {results['machine']['loadavg_at_start']}: something else is using the CPUs", flush=True)
    logdir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    ps = {n: p for n, p in payloads.all_payloads().items() if n in args.endpoints}
    bodies = payloads.write(logdir / "bodies")
    home = servers.new_home()

    print(f"workers per side: {workers}; logs in {logdir}\n1/6 compute floor (in-process ONNX Runtime)", flush=True)
    results["floor"] = compute.floor()

    print("2/6 cold start", flush=True)
    results["cold_start"] = {"service": coldstart.service_trials(workers, home, logdir, args.cold_trials, ps,
                                                                args.bentoml_config),
                             "baseline": coldstart.baseline_trials(workers, logdir, args.cold_trials, ps)}

    print("3/6 load matrix (A/B alternating)", flush=True)
    started = {"service": servers.start_service(workers, home, logdir, extra_config=args.bentoml_config),
               "baseline": servers.start_baseline(workers, logdir)}
    try:
        for s in started.values():
            servers.wait_ready(s)
        time.sleep(2)  # let start-up work (model store scans, first GCs) settle before the idle reading
        answers = {side: {n: load.check_answers(s.url, p) for n, p in ps.items()} for side, s in started.items()}
        results["same_answers"] = report.same_answers(answers)
        results["memory"] = {side: {"idle_rss_mib": s.rss_mib()} for side, s in started.items()}
        rows = matrix(started, ps, bodies, args.concurrency, args.duration, args.rounds, args.warmup)
        results["runs"] = rows
        results["table"] = summarise(rows)
        for side, s in started.items():
            results["memory"][side]["after_load_rss_mib"] = s.rss_mib()
        started["baseline"].stop()  # the soak is the service's alone

        if args.soak > 0:
            print(f"4/6 soak: {args.soak:g} s at half capacity", flush=True)
            # capacity: the best service req/s of each endpoint; its lowest p50 (no queueing) paces the connections
            capacity = {n: (max(r["rps"] for r in results["table"] if r["side"] == "service" and r["endpoint"] == n),
                            min(r["p50_ms"] for r in results["table"] if r["side"] == "service" and r["endpoint"] == n))
                        for n in ps}
            results["soak"] = soak.run(started["service"], ps, bodies, capacity, args.soak)
            results["memory"]["service"]["after_soak_rss_mib"] = started["service"].rss_mib()
    finally:
        for s in started.values():
            s.stop()

    if args.profile:
        from benchmarks import profile

        print("5/6 profiles (py-spy)", flush=True)
        results["profiles"] = {n: profile.profile(n, 10, 16, extra_config=args.bentoml_config) for n in args.profile}

    results["elapsed_s"] = round(time.perf_counter() - t0, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print("6/6 report", flush=True)
    report.write(results, args.markdown)
    print(f"wrote {args.markdown} and {args.json} in {results['elapsed_s']:.0f} s")


if __name__ == "__main__":
    main()
