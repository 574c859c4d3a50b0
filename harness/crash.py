"""Crash: SIGKILL the serving worker under load; BentoML's supervisor must start a new one.

    python -m harness.crash                      # starts its own server (about 1 minute)
    python -m harness.crash --workers 2          # kill one of two workers: the other keeps serving

The request mix, closed loop (testkit.driver) with --concurrency clients for --before s, then SIGKILL of a
worker process (`_bentoml_impl.worker.service`), load continuing for --after s. Recorded: requests that
failed (any answer but 2xx or 429, or no answer) and when; seconds from the kill to a new worker process,
to /readyz 200, and to the first 2xx answer to a request sent after the kill; throughput before and after.
Pass: a new worker replaced the old one, the service answers 2xx again within --recover-within s, and
nothing fails after that.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time

from testkit.driver import Driver, go
from testkit.payloads import request_mix
from harness.probe import fetch
from harness.report import finish, service_settings
from testkit.server import Server, serving


async def watch(server: Server, before: set[int], t_kill: float, give_up: float = 60) -> dict:
    """Poll for a replacement worker (a pid not in `before`) and for /readyz 200 (times in s after the kill)."""
    new_pid, pid_at, ready_at = None, None, None
    while time.monotonic() - t_kill < give_up and (pid_at is None or ready_at is None):
        if pid_at is None:
            pids = [p.pid for p in server.workers() if p.pid not in before]
            if pids:
                new_pid, pid_at = pids[0], time.monotonic() - t_kill
        if ready_at is None and pid_at is not None and (await fetch(server.url, timeout=1))[0] == 200:
            ready_at = time.monotonic() - t_kill
        await asyncio.sleep(0.05)
    return {"new_worker_pid": new_pid, "new_worker_after_s": pid_at, "readyz_200_after_s": ready_at}


async def crash(server: Server, workers: int | None, concurrency: int, before: float, after: float) -> dict:
    pids = sorted(p.pid for p in server.workers())
    assert workers is None or len(pids) == workers, f"expected {workers} workers, found {pids}"
    workers = len(pids)
    old_pid = pids[0]
    driver = Driver(server.url, request_mix(), backoff_429=0.05)
    runner = asyncio.create_task(driver.run(before + after, clients=concurrency))
    await asyncio.sleep(before)
    t_kill = time.monotonic()
    os.kill(old_pid, signal.SIGKILL)
    kill_at = t_kill - driver.t0
    replaced = await watch(server, set(pids), t_kill)
    records = await runner

    failed = ~records.ok & ~records.refused
    ok_after = records.ok & (records.sent >= kill_at)
    first_ok = float((records.sent + records.latency)[ok_after].min()) if ok_after.any() else None
    recovered_at = None if first_ok is None else first_ok - kill_at
    late = failed & (records.sent > kill_at + (recovered_at if recovered_at is not None else float("inf")))
    end = records.duration
    return {
        "workers": workers,
        "concurrency": concurrency,
        "killed_worker_pid": old_pid,
        "kill_at_s": round(kill_at, 3),
        **replaced,
        "first_2xx_after_kill_s": None if recovered_at is None else round(recovered_at, 3),
        "failed_requests": int(failed.sum()),
        "failed_started_s_after_kill": sorted(round(float(t) - kill_at, 3) for t in records.sent[failed]),
        "failed_in_flight_at_kill": int((failed & (records.sent < kill_at)).sum()),
        "failures_after_recovery": int(late.sum()),
        "refused_429": int(records.refused.sum()),
        "slowest_answer_s": round(float(records.latency.max()), 3) if len(records) else None,
        "requests": len(records),
        "before_kill": records.window(0, kill_at).summary(),
        "after_kill": records.window(kill_at, end).summary(),
        "steady_after_recovery": records.window(min(end, kill_at + (recovered_at or 0) + 2), end).summary(),
        "not_2xx_first_100": records.not_ok(100),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=None, help="worker processes, one of them killed (default: the "
                        "service's own)")
    parser.add_argument("--concurrency", type=int, default=2, help="closed-loop clients (default 2)")
    parser.add_argument("--before", type=float, default=10)
    parser.add_argument("--after", type=float, default=30)
    parser.add_argument("--recover-within", type=float, default=30)
    parser.add_argument("--out", help="JSON results file (default harness/results/crash-<date>.json)")
    args = parser.parse_args(argv)
    with serving(workers=args.workers) as server:
        result = go(crash(server, args.workers, args.concurrency, args.before, args.after))
        result["server_ready_after"] = server.ready()
    checks = {
        "a new worker replaced the killed one": result["new_worker_pid"] is not None,
        f"2xx again within {args.recover_within} s": result["first_2xx_after_kill_s"] is not None
        and result["first_2xx_after_kill_s"] <= args.recover_within,
        "no failures after recovery": result["failures_after_recovery"] == 0,
        "ready at the end": result["server_ready_after"],
    }
    result["checks"] = checks
    result["passed"] = all(checks.values())
    return finish("crash", result, args.out, hide=("not_2xx_first_100",), service=service_settings(workers=args.workers))


if __name__ == "__main__":
    sys.exit(main())
