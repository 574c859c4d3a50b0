"""SIGTERM under load: every request that reached the server is answered, and it exits 0 within its drain plus a second.

    python -m harness.drain                       # 10 runs: 32 clients on /digit, SIGTERM after 2 s
    python -m harness.drain --runs 3 --workers 1 2 --hogs 1

Each run starts `bentoml serve .` (default configuration unless --workers pins the count), drives it with
--clients closed-loop clients (testkit.driver: keep-alive connections; one that the server closes is
reopened for the next request), sends SIGTERM to the `bentoml serve` process alone (what Kubernetes and
docker send to PID 1) after --after seconds, and goes on sending until the process has exited.

Counted per run: answers (2xx and not), requests **lost** (written on a connection that closed without an
answer, timed out, or got a malformed answer), connections **refused** (nothing was sent: the server had
stopped accepting), and refusals before the drain's end (the server must accept throughout its drain).
Pass: 0 lost, 0 non-2xx, no refusal before SERVICE_DRAIN_S after the signal, exit status 0 within
SERVICE_DRAIN_S + 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time

from harness.report import finish, service_settings
from testkit import host
from testkit.driver import CONNECT, Driver, go
from testkit.payloads import bench_payloads
from testkit.records import Records
from testkit.server import Server, start_service
from service.settings import Settings

EXIT_MARGIN_S = 1.0


def lost(records: Records) -> int:
    """Requests sent that got no answer: the connection closed under them, a timeout, a bad answer."""
    return int((records.transport_errors & (records.error != CONNECT)).sum())


async def sigterm_under_load(server: Server, endpoint: str, clients: int, after: float, drain_s: float) -> dict:
    """`clients` closed-loop clients; SIGTERM to the server's process after `after` s; until it has exited."""
    payload = bench_payloads()[endpoint]
    driver = Driver(server.url, [(payload, 1)], timeout=30, error_pause=0.02)
    runner = asyncio.create_task(driver.run(after + drain_s + EXIT_MARGIN_S + 2, clients=clients, drain=5))
    await asyncio.sleep(after)
    signalled = time.monotonic()
    os.kill(server.proc.pid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    try:
        status = await loop.run_in_executor(None, server.proc.wait, drain_s + 30)
    except Exception:  # still running: a failure of its own
        status = None
    exited_after = time.monotonic() - signalled
    records = await runner
    t_signal = signalled - driver.t0
    refused = records.transport_errors & (records.error == CONNECT)
    early = refused & (records.sent < t_signal + drain_s)
    first_refusal = float(records.sent[refused].min() - t_signal) if refused.any() else None
    before = records.sent < t_signal
    return {
        "exit_status": status, "exited_after_s": round(exited_after, 3),
        "requests": len(records), "answered_2xx": int(records.ok.sum()),
        "answered_before_signal": int((records.ok & before).sum()),
        "answered_after_signal": int((records.ok & ~before).sum()),
        "non_2xx": int(((records.status > 0) & ~records.ok).sum()),
        "lost": lost(records), "refused_connections": int(refused.sum()),
        "refused_before_drain_end": int(early.sum()),
        "first_refusal_after_signal_s": None if first_refusal is None else round(first_refusal, 3),
        "not_ok": [r for r in records.not_ok(20) if r["error"] != "connect"],
    }


def passed(run: dict, drain_s: float) -> bool:
    return (run["lost"] == 0 and run["non_2xx"] == 0 and run["refused_before_drain_end"] == 0
            and run["exit_status"] == 0 and run["exited_after_s"] <= drain_s + EXIT_MARGIN_S)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10, help="SIGTERMs per worker count (default 10)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--after", type=float, default=2.0, help="seconds of load before SIGTERM (default 2)")
    ap.add_argument("--endpoint", default="digit", choices=list(bench_payloads()))
    ap.add_argument("--workers", type=int, nargs="+", default=[0],
                    help="worker counts, alternated run by run (default: 0, the service's own default)")
    ap.add_argument("--hogs", type=int, default=0, help="processes each keeping one core busy for the whole run")
    ap.add_argument("--env", action="append", metavar="KEY=VALUE", help="environment of the service")
    ap.add_argument("--out", help="results file (default harness/results/drain-<date>.json)")
    args = ap.parse_args(argv)
    from testkit.server import parse_env

    env = parse_env(args.env)
    drain_s = Settings.from_env({**os.environ, **env}).drain_s
    runs: list[dict] = []
    with host.cpu_hogs(args.hogs):
        for i in range(args.runs):
            for workers in args.workers:
                server = start_service(workers=workers or None, env=env)
                try:
                    server.wait_ready()
                    run = go(sigterm_under_load(server, args.endpoint, args.clients, args.after, drain_s))
                finally:
                    if server.proc.poll() is None:
                        server.stop()
                run.update(run=i + 1, workers=workers or "default", passed=passed(run, drain_s))
                runs.append(run)
                print(f"run {i + 1} workers={run['workers']}: {run['answered_2xx']} answered "
                      f"({run['answered_after_signal']} after SIGTERM), lost {run['lost']}, non-2xx {run['non_2xx']}, "
                      f"refused {run['refused_connections']} (first {run['first_refusal_after_signal_s']} s after "
                      f"SIGTERM), exit {run['exit_status']} after {run['exited_after_s']} s: "
                      f"{'pass' if run['passed'] else 'FAIL'}", flush=True)
    results = {"command": "python -m harness.drain" + "".join(f" {a}" for a in sys.argv[1:]), "drain_s": drain_s,
               "clients": args.clients, "after_s": args.after, "endpoint": args.endpoint, "cpu_hogs": args.hogs,
               "runs": runs, "passed_runs": sum(r["passed"] for r in runs), "of": len(runs)}
    results["passed"] = results["passed_runs"] == results["of"]
    print(f"{results['passed_runs']} of {results['of']} runs passed")
    sys.exit(finish("drain", results, args.out, service=service_settings(env)))


if __name__ == "__main__":
    main()
