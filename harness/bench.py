"""The whole benchmark in one command: compute floor, cold start, the A/B load matrix, memory, a soak and profiles; writes docs/benchmarks.md.

    .venv/bin/python -m harness.bench                  # defaults: about 20 minutes on 2 cores
    .venv/bin/python -m harness.bench --duration 3 --rounds 1 --soak 30 --cold-trials 1   # a quick look

Side A is the real service (`bentoml serve .`, production mode) in its default configuration; side B the
bare Starlette baseline (harness/baseline.py under uvicorn). Both run at once with the same worker count
(--workers, default the service's own; several counts: harness/scaling.py); wrk drives one at a time, alternating which goes first, so that drift on the
machine hits both alike. --env and --bentoml-config change the service's configuration; when used, they
are written into the report next to the figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import coldstart, compute, render, report, soak, wrk
from testkit import payloads
from testkit.host import cpu_hogs
from testkit.driver import go
from testkit.server import parse_env, start_baseline, start_service

REPO = Path(__file__).resolve().parents[1]


def summarise(rows: list[dict]) -> list[dict]:
    """Median over rounds of every figure (max: the largest; counts: the sum), one row per side x endpoint x concurrency."""
    keys = sorted({(r["side"], r["endpoint"], r["concurrency"]) for r in rows}, key=lambda k: (k[1], k[2], k[0]))
    out = []
    for side, endpoint, c in keys:
        group = [r for r in rows if (r["side"], r["endpoint"], r["concurrency"]) == (side, endpoint, c)]
        med = lambda k: round(statistics.median(g[k] for g in group), 3)  # noqa: E731
        total = lambda k: sum(g[k] for g in group)  # noqa: E731
        out.append({
            "side": side, "endpoint": endpoint, "concurrency": c, "rounds": len(group),
            "rps": med("rps"), "images_per_s": med("images_per_s"),
            "p50_ms": med("p50_ms"), "p90_ms": med("p90_ms"), "p99_ms": med("p99_ms"),
            "max_ms": max(g["max_ms"] for g in group), "requests": total("requests"),
            "non_2xx": total("non_2xx"), "transport_errors": total("transport_errors"),
            "server_cpu_ms_per_req": round(1000 * total("server_cpu_s") / max(total("requests"), 1), 3),
            "client_cores": round(total("client_cpu_s") / total("seconds"), 3),
        })
    return out


def main(argv: list[str] | None = None) -> None:
    names = list(payloads.bench_payloads())
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=8, help="seconds per wrk run (default 8)")
    ap.add_argument("--rounds", type=int, default=2, help="times the whole matrix is run (default 2)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256], help="for every endpoint but digits64")
    ap.add_argument("--digits64-concurrency", type=int, nargs="*", default=[16], help="for digits64 (default 16)")
    ap.add_argument("--endpoints", nargs="+", default=names, choices=names)
    ap.add_argument("--workers", type=int, nargs="+", default=None,
                    help="worker count of both sides (default: the service's own, one per usable CPU); several counts: "
                    "the service with each, side by side, and no baseline (harness/scaling.py)")
    ap.add_argument("--share-rounds", type=int, default=10, help="with several --workers: rounds of the deciding cells")
    ap.add_argument("--share-seconds", type=float, default=4, help="with several --workers: seconds of each")
    ap.add_argument("--warmup", type=float, default=2, help="seconds of unrecorded load per endpoint and side")
    ap.add_argument("--cold-trials", type=int, default=3, help="restarts timed with a populated model store (0: no cold start step)")
    ap.add_argument("--soak", type=float, default=300, help="seconds of the soak at half capacity (0: skip)")
    ap.add_argument("--profile", nargs="*", default=["temperature", "digit", "digits64"], choices=names,
                    help="endpoints to profile with py-spy (none: --profile alone)")
    ap.add_argument("--bentoml-config", default="", help="extra BENTOML_CONFIG_OPTIONS for the service, e.g. "
                    "'services.ThermoDigits.logging.access.enabled=false' (default: none, the service as configured)")
    ap.add_argument("--env", action="append", metavar="KEY=VALUE", help="environment for both sides, e.g. SERVICE_THREADS=1")
    ap.add_argument("--hogs", type=int, default=0, help="processes each keeping one core busy for the whole run "
                    "(1 on two cores: a host half as fast); started and stopped here")
    ap.add_argument("--json", type=Path, help="results file (default harness/results/bench-<date>.json)")
    ap.add_argument("--markdown", type=Path, help="the report (default docs/benchmarks.md; with --hogs, none)")
    args = ap.parse_args(argv)
    if args.markdown is None and not args.hogs:
        args.markdown = REPO / "docs" / "benchmarks.md"
    with cpu_hogs(args.hogs):
        if args.workers and len(args.workers) > 1:
            from harness import scaling

            sys.exit(scaling.run(args))
        args.workers = args.workers[0] if args.workers else None
        run(args)


def run(args: argparse.Namespace) -> None:

    wrk.wrk_path()
    t0 = time.perf_counter()
    env = parse_env(args.env)
    service = report.service_settings(env, args.workers, args.bentoml_config)
    options = {"workers": args.workers, "bentoml_config": args.bentoml_config, "env": env}
    results: dict = {"command": ".venv/bin/python -m harness.bench" + "".join(f" {a}" for a in sys.argv[1:]),
                     "duration_s": args.duration, "rounds": args.rounds, "cpu_hogs": args.hogs}
    loadavg = report.machine()["loadavg_at_start"]
    if loadavg[0] > 0.5 + args.hogs:
        print(f"warning: load average {loadavg}: something else is using the CPUs", flush=True)
    logdir = Path(tempfile.mkdtemp(prefix="harness-bench-"))
    ps = {n: p for n, p in payloads.bench_payloads().items() if n in args.endpoints}
    bodies = payloads.write_bodies(logdir / "bodies", ps)
    home = Path(tempfile.mkdtemp(prefix="harness-bentoml-home-"))

    print(f"workers per side: {args.workers}; logs in {logdir}\n1/6 compute floor (in-process ONNX Runtime)", flush=True)
    results["floor"] = compute.floor()

    if args.cold_trials > 0:
        print("2/6 cold start", flush=True)
        results["cold_start"] = {"service": coldstart.service_trials(home, logdir, args.cold_trials, ps, **options),
                                 "baseline": coldstart.baseline_trials(args.workers, logdir, args.cold_trials, ps, env)}

    print("3/6 load matrix (A/B alternating)", flush=True)
    started = {"service": start_service(home=home, logdir=logdir, **options),
               "baseline": start_baseline(args.workers, env, logdir)}
    try:
        for s in started.values():
            s.wait_ready()
        time.sleep(2)  # let start-up work (model store scans, first GCs) settle before the idle reading
        answers = {side: {n: wrk.check_answers(s.url, p) for n, p in ps.items()} for side, s in started.items()}
        results["same_answers"] = render.same_answers(answers)
        results["memory"] = {side: {"idle_rss_mib": s.rss_mib()} for side, s in started.items()}
        cells = payloads.cells(args.concurrency, args.digits64_concurrency, list(ps))
        rows = wrk.matrix(started, ps, bodies, cells, args.duration, args.rounds, args.warmup)
        results["runs"] = rows
        results["table"] = summarise(rows)
        for side, s in started.items():
            results["memory"][side]["after_load_rss_mib"] = s.rss_mib()
        started["baseline"].stop()  # the soak is the service's alone

        if args.soak > 0:
            print(f"4/6 soak: {args.soak:g} s at half capacity", flush=True)
            results["soak"] = go(soak.soak(started["service"], args.soak, warmup=min(60.0, args.soak / 5)))
            results["memory"]["service"]["after_soak_rss_mib"] = started["service"].rss_mib()
    finally:
        for s in started.values():
            if s.proc.poll() is None:
                s.stop()

    path = report.save("bench", results, args.json, service)  # kept even if a profile fails below
    if args.profile:
        from harness import profile

        print("5/6 profiles (py-spy)", flush=True)
        results["profiles"] = {n: profile.profile(n, 10, 16, bentoml_config=args.bentoml_config, env=env)
                               for n in args.profile}

    results["elapsed_s"] = round(time.perf_counter() - t0, 1)
    path = report.save("bench", results, path, service)
    if args.markdown:
        print("6/6 report", flush=True)
        report.render_all(args.markdown, path)  # with the newest peers and worker-count runs
    print(f"wrote {path}{f' and {args.markdown}' if args.markdown else ''} in {results['elapsed_s']:.0f} s")


if __name__ == "__main__":
    main()
