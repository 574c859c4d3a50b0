"""Crash: SIGKILL the serving worker under load; BentoML's supervisor must start a new one.

    python -m reliability.crash                      # starts its own server (about 1 minute)
    python -m reliability.crash --workers 2          # kill one of two workers: the other keeps serving

Closed-loop mixed load at --concurrency for --before s, then SIGKILL of a worker process
(`_bentoml_impl.worker.service`), load continuing for --after s. Recorded: requests that failed (any answer
but 200 or 429, or no answer) and when; seconds from the kill to a new worker process, to /readyz 200, and to the
first 200 answer to a request sent after the kill; throughput before and after. Pass: a new worker
replaced the old one, the service answers 200 again within --recover-within s, and nothing fails after that.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time

import httpx

from reliability.load import Load
from reliability.report import finish, traffic_config
from reliability.server import Server, serving


async def watch(server: Server, before: set[int], t_kill: float, give_up: float = 60) -> dict:
    """Poll for a replacement worker (a pid not in `before`) and for /readyz 200 (times in s after the kill)."""
    new_pid, pid_at, ready_at = None, None, None
    async with httpx.AsyncClient(timeout=1) as client:
        while time.monotonic() - t_kill < give_up and (pid_at is None or ready_at is None):
            if pid_at is None:
                pids = [p.pid for p in server.workers() if p.pid not in before]
                if pids:
                    new_pid, pid_at = pids[0], time.monotonic() - t_kill
            if ready_at is None and pid_at is not None:
                try:
                    if (await client.get(server.url + "/readyz")).status_code == 200:
                        ready_at = time.monotonic() - t_kill
                except httpx.HTTPError:
                    pass
            await asyncio.sleep(0.05)
    return {"new_worker_pid": new_pid, "new_worker_after_s": pid_at, "readyz_200_after_s": ready_at}


async def crash(server: Server, workers: int, concurrency: int, before: float, after: float) -> dict:
    pids = sorted(p.pid for p in server.workers())
    assert len(pids) == workers, f"expected {workers} workers, found {pids}"
    old_pid = pids[0]
    load = Load(server.url, concurrency)
    runner = asyncio.create_task(load.run(before + after))
    await asyncio.sleep(before)
    t_kill = time.monotonic()
    os.kill(old_pid, signal.SIGKILL)
    kill_at = t_kill - load.t0
    replaced = await watch(server, set(pids), t_kill)
    stats = await runner

    pre, post = stats.window(0, kill_at), stats.window(kill_at, stats.duration)
    failed = stats.failed  # neither 200 nor load shedding (429/503)
    sent_after_kill_ok = [r for r in stats.results if r.start >= kill_at and r.status == 200]
    first_ok = min((r.start + r.latency for r in sent_after_kill_ok), default=None)
    recovered_at = first_ok - kill_at if first_ok is not None else None
    late_failures = [r for r in failed if recovered_at is not None and r.start > kill_at + recovered_at]
    steady = stats.window(kill_at + (recovered_at or 0) + 2, stats.duration)
    return {
        "workers": workers,
        "concurrency": concurrency,
        "killed_worker_pid": old_pid,
        "kill_at_s": round(kill_at, 3),
        **replaced,
        "first_200_after_kill_s": None if recovered_at is None else round(recovered_at, 3),
        "failed_requests": len(failed),
        "failed_by_status": {k: v for k, v in stats.by_status.items() if k not in ("200", "429", "503")},
        "failed_started_s_after_kill": sorted(round(r.start - kill_at, 3) for r in failed),
        "failed_in_flight_at_kill": sum(1 for r in failed if r.start < kill_at),
        "shed_429": stats.by_status.get("429", 0),
        "slowest_answer_s": round(stats.max_latency(), 3),
        "failures_after_recovery": len(late_failures),
        "requests": len(stats.results),
        "before_kill": pre.summary(),
        "after_kill": post.summary(),
        "steady_after_recovery": steady.summary(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (one of them is killed)")
    parser.add_argument("--concurrency", type=int, default=2, help="clients (default: the saturating concurrency, "
                                                                    "below max_concurrency: no shedding)")
    parser.add_argument("--before", type=float, default=10)
    parser.add_argument("--after", type=float, default=30)
    parser.add_argument("--recover-within", type=float, default=30)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    # Several workers share max_concurrency (BentoML divides it): scale it with them, as service/service.py says.
    limit = traffic_config()["max_concurrency"] * args.workers
    options = f"services.ThermoDigits.workers={args.workers} services.ThermoDigits.traffic.max_concurrency={limit}"
    with serving(env={"BENTOML_CONFIG_OPTIONS": options}) as server:
        result = asyncio.run(crash(server, args.workers, args.concurrency, args.before, args.after))
        result["server_ready_after"] = server.ready()
    checks = {
        "a new worker replaced the killed one": result["new_worker_pid"] is not None,
        f"200 again within {args.recover_within} s": result["first_200_after_kill_s"] is not None
        and result["first_200_after_kill_s"] <= args.recover_within,
        "no failures after recovery": result["failures_after_recovery"] == 0,
        "ready at the end": result["server_ready_after"],
    }
    result["checks"] = checks
    result["passed"] = all(checks.values())
    return finish("crash", result, args.out)


if __name__ == "__main__":
    sys.exit(main())
