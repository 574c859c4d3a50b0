"""Closed-loop runs with wrk (one thread, Lua script harness/lua/post.lua): statistics of one endpoint at one concurrency, plus wrk's own CPU time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from testkit.payloads import Payload
from testkit.server import Server, request

LUA = Path(__file__).resolve().parent / "lua" / "post.lua"


@dataclass
class Result:
    """One wrk run against one server and endpoint (latencies in ms, of every answer, 2xx or not)."""

    side: str
    endpoint: str
    concurrency: int
    seconds: float
    requests: int  # answers received, whatever their status
    ok_2xx: int
    rps: float  # 2xx answers per second: a fast 429 is not throughput
    images_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    non_2xx: int  # answers with status >= 400
    refused_429: int  # of which 429 (admission refused)
    transport_errors: int  # connect + read + write + timeout: no answer
    error_detail: dict
    client_cpu_s: float  # wrk's own user+system CPU: what the load generator took from the cores
    server_cpu_s: float  # the server's process tree CPU during the run

    @property
    def client_cores(self) -> float:
        return self.client_cpu_s / self.seconds

    def as_dict(self) -> dict:
        return asdict(self)


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is not installed: apt-get update && apt-get install -y wrk")
    return path


def run(url: str, payload: Payload, body_file: Path, concurrency: int, seconds: float, side: str = "service",
        cpu_of=lambda: 0.0, delay_ms: float = 0, timeout_s: int = 10) -> Result:
    """wrk with one thread (a second would take CPU from the server; one drives >20k req/s here); whole seconds only."""
    cmd = [wrk_path(), "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", f"--timeout={timeout_s}s",
           "-s", str(LUA), url + payload.path, "--", str(body_file), payload.content_type]
    env = {**os.environ, "WRK_DELAY_MS": str(int(delay_ms))} if delay_ms else None
    server_cpu0 = cpu_of()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)  # rusage of exactly this wrk process
    proc.returncode = os.waitstatus_to_exitcode(status)
    server_cpu = cpu_of() - server_cpu0
    line = next((l for l in out.splitlines() if l.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{out}")
    data = json.loads(line.removeprefix("WRKJSON "))
    secs = data["duration_us"] / 1e6
    lat = {k: v / 1000 for k, v in data["latency_us"].items()}
    errors = data["errors"]
    ok = data["requests"] - errors["status"]
    return Result(
        side=side, endpoint=payload.name, concurrency=concurrency, seconds=round(secs, 3),
        requests=data["requests"], ok_2xx=ok, rps=round(ok / secs, 1), images_per_s=round(ok * payload.images / secs, 1),
        p50_ms=lat["p50"], p90_ms=lat["p90"], p99_ms=lat["p99"], max_ms=lat["max"], mean_ms=round(lat["mean"], 3),
        non_2xx=errors["status"], refused_429=data["refused"], transport_errors=sum(v for k, v in errors.items() if k != "status"),
        error_detail=errors, client_cpu_s=round(usage.ru_utime + usage.ru_stime, 3), server_cpu_s=round(server_cpu, 3),
    )


def matrix(servers: dict[str, Server], payloads: dict[str, Payload], bodies: dict[str, Path],
           cells: list[tuple[str, int]], duration: float, rounds: int = 1, warmup: float = 0) -> list[dict]:
    """Every (endpoint, concurrency) cell on every server, `rounds` times; with two servers the one that goes
    first alternates cell by cell, and every server is idle before each run (a slow cell leaves queued work)."""
    sides = list(servers)
    rows = []
    for name in dict.fromkeys(n for n, _ in cells):  # warm every side once per endpoint; not recorded
        for side in sides if warmup else ():
            run(servers[side].url, payloads[name], bodies[name], 16, warmup, side)
    for r in range(rounds):
        for i, (name, c) in enumerate(cells):
            for side in sides if (i + r) % 2 == 0 else sides[::-1]:
                for s in servers.values():
                    s.wait_idle()
                res = run(servers[side].url, payloads[name], bodies[name], c, duration, side, servers[side].cpu_seconds)
                rows.append({**res.as_dict(), "round": r})
                print(f"  {side:8s} {name:14s} c={c:<3d} {res.rps:8.1f} 2xx/s  p50 {res.p50_ms:7.2f}  p99 {res.p99_ms:7.2f}"
                      f"  max {res.max_ms:7.2f} ms  non-2xx {res.non_2xx}  transport errors {res.transport_errors}",
                      flush=True)
    return rows


def check_answers(url: str, payload: Payload) -> bytes:
    """One request outside the timed runs; raise unless it is a 200 (a benchmark of errors says nothing)."""
    status, body = request(url, "POST", payload.path, payload.body, payload.content_type, timeout=30)
    if status != 200:
        raise RuntimeError(f"{url}{payload.path} answered {status}: {body[:300]!r}")
    return body
