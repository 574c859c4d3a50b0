"""The service beside its peers in one run: every server started at once, answers checked, then wrk on each cell, sides alternating.

    .venv/bin/python -m harness.peers                         # 3 rounds x 5 s per cell and side: ~5 minutes on 2 cores
    .venv/bin/python -m harness.peers --rounds 1 --duration 2 --warmup 0     # does it work end to end

HTTP cells are driven by wrk; gRPC cells (the service's and Triton's GRPCInferenceService, the same raw
ModelInferRequest) by testkit.grpc_load in a process of its own, its callers sharing 8 connections.
Sides: the service (`bentoml serve .`, its default configuration), the bare Starlette baseline
(harness/baseline.py), and the peers, each from its own pinned venv under build/peers/, made on first
use from harness/peers/<peer>.txt (under a minute each with a warm pip cache; 200-420 MiB):
bentoml-docs (BentoML written as its docs write a service), litserve (LitServe, /digit batched) and
triton (Triton through PyTriton, dynamic batching).
The same body files go to every side of a cell. Before any load, each side's answer to each of its
cells is compared with the service's (same fields, same digit, floats to 1e-5): a side that differs
stops the run. Throughput counts 2xx answers only; latency percentiles are wrk's, of every answer.
Results: harness/results/peers-<UTC date>.json; `harness.render.peers_section` makes the Markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from harness import render, report, wrk
from testkit import payloads
from harness.bench import summarise
from harness.peers import servers, venvs
from testkit.server import REPO, Server, established, request, start_baseline, start_service


@dataclass(frozen=True)
class Cell:
    """One endpoint at one concurrency, and the sides that answer it with the same body."""

    endpoint: str  # a key of bodies() (HTTP, driven by wrk) or of grpc_bodies() (gRPC, by testkit.grpc_load)
    concurrency: int
    sides: tuple[str, ...]
    goal: bool  # the goal: the service's 2xx/s >= every peer's, and its p99 <= every peer's

    @property
    def grpc(self) -> bool:
        return self.endpoint.startswith("grpc_")

    @property
    def key(self) -> str:
        return f"{self.endpoint}@{self.concurrency}"


TYPED = ("service", "bentoml-docs", "litserve", "baseline")
V2 = ("service", "triton")
CELLS = (
    Cell("temperature", 16, TYPED, True),
    Cell("digit", 64, TYPED, True),
    Cell("v2_mnist_fc", 64, V2, True),
    Cell("v2_temperature_linear", 16, V2, False),
    Cell("grpc_mnist_fc", 64, V2, True),
    Cell("grpc_temperature_linear", 16, V2, True),
)
GRPC_CHANNELS = 8  # connections the gRPC callers share (a client process holds a channel or a few, not one per call)
PEERS = tuple(venvs.PEERS)
IDLE_MARGIN = 0.05  # of a core, above a server's own idle use: still busy with a previous run
TOLERANCE = {"rel_tol": 1e-5, "abs_tol": 1e-12}  # float32 sums in another order (ONNX Runtime's default threads)


def bodies() -> dict[str, payloads.Payload]:
    typed = payloads.bench_payloads()
    return {"temperature": typed["temperature"], "digit": typed["digit"], **payloads.v2_payloads()}


def grpc_bodies() -> dict[str, bytes]:
    """Serialized ModelInferRequests of the v2 bodies' tensors, raw (as tritonclient.grpc sends them)."""
    from testkit.grpc_load import infer_request

    out = {}
    for name, p in payloads.v2_payloads().items():
        (t,) = json.loads(p.body)["inputs"]
        model = p.path.split("/")[3]
        array = np.asarray(t["data"], dtype=np.float32 if t["datatype"] == "FP32" else np.float64).reshape(t["shape"])
        out["grpc_" + name.removeprefix("v2_")] = infer_request(model, t["name"], t["datatype"], array)
    return out


def grpc_answer(target: str, request: bytes) -> dict:
    """One ModelInfer: its outputs as comparable() gives them (raw outputs decoded, flat)."""
    import grpc

    from service.v2.proto import grpc_predict_v2_pb2 as pb

    with grpc.insecure_channel(target) as channel:
        raw = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")(request, timeout=30)
    answer = pb.ModelInferResponse.FromString(raw)
    outputs = []
    for i, o in enumerate(answer.outputs):
        dtype = "<f4" if o.datatype == "FP32" else "<f8"
        data = (np.frombuffer(answer.raw_output_contents[i], dtype=dtype) if answer.raw_output_contents
                else np.asarray(getattr(o.contents, f"{o.datatype.lower()}_contents")))
        outputs.append({"name": o.name, "datatype": o.datatype, "shape": list(o.shape), "data": data.tolist()})
    return {"outputs": outputs}


def connected(pid: int, port: int) -> int:
    """The established TCP connections process `pid` holds to `port` (0 once it is gone)."""
    with contextlib.suppress(psutil.Error):
        return established(psutil.Process(pid), remote_port=port)
    return 0


def grpc_run(server: Server, request_file: Path, cell: Cell, seconds: float, side: str) -> dict:
    """testkit.grpc_load in a process of its own against `server`'s gRPC port: a row shaped like a wrk.Result's, with
    how the client's connections fell on the server's workers."""
    cpu0 = server.cpu_seconds()
    client = subprocess.Popen([sys.executable, "-m", "testkit.grpc_load", f"127.0.0.1:{server.grpc_port}",
                               str(request_file), "--clients", str(cell.concurrency), "--channels", str(GRPC_CHANNELS),
                               "--seconds", str(seconds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=REPO)
    split: list[int] = []
    deadline = time.monotonic() + min(seconds / 2, 3.0)
    while client.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # a poll: the client opens its channels as its first calls go out
        if connected(client.pid, server.grpc_port) >= GRPC_CHANNELS:  # read the client, not the side: same work for all
            split = sorted(server.connections_per_worker(server.grpc_port), reverse=True)
            break
    out, err = client.communicate(timeout=seconds + 120)
    if client.returncode:
        raise subprocess.CalledProcessError(client.returncode, client.args, out, err)
    r = json.loads(out)
    failed = r["calls"] - r["ok"]
    return {"side": side, "endpoint": cell.endpoint, "concurrency": cell.concurrency, "seconds": r["seconds"],
            "requests": r["calls"], "ok_2xx": r["ok"], "rps": r["ok_per_s"], "images_per_s": r["ok_per_s"],
            "p50_ms": r["p50_ms"], "p90_ms": r["p90_ms"], "p99_ms": r["p99_ms"], "max_ms": r["max_ms"],
            "mean_ms": r["p50_ms"], "non_2xx": failed, "refused_429": r["codes"].get("RESOURCE_EXHAUSTED", 0),
            "transport_errors": 0, "error_detail": r["codes"], "client_cpu_s": r["client_cpu_s"],
            "server_cpu_s": round(server.cpu_seconds() - cpu0, 3),
            "connections_per_worker": split if sum(split) else []}  # []: no process found holds them (Triton's)


def differences(expected, got, where: str = "") -> list[str]:
    """Where `got` differs from `expected`: keys, lengths, strings and ints exactly, floats to TOLERANCE."""
    if isinstance(expected, dict) and isinstance(got, dict):
        if expected.keys() != got.keys():
            return [f"{where or 'answer'}: keys {sorted(got)}, expected {sorted(expected)}"]
        return [d for k in expected for d in differences(expected[k], got[k], f"{where}.{k}")]
    if isinstance(expected, list) and isinstance(got, list):
        if len(expected) != len(got):
            return [f"{where}: {len(got)} items, expected {len(expected)}"]
        return [d for i, (a, b) in enumerate(zip(expected, got)) for d in differences(a, b, f"{where}[{i}]")]
    if isinstance(expected, float) or isinstance(got, float):
        ok = isinstance(got, (int, float)) and math.isclose(expected, got, **TOLERANCE)
        return [] if ok else [f"{where}: {got!r}, expected {expected!r}"]
    return [] if expected == got else [f"{where}: {got!r}, expected {expected!r}"]


def comparable(endpoint: str, answer: dict) -> dict:
    """What must agree between sides: a typed answer whole; of a v2 answer its outputs (name, datatype, shape, data),
    not model_version or id (Triton numbers versions 1, 2, ...; the service uses the content hash)."""
    if endpoint.startswith("v2_"):
        return {"outputs": [{k: o.get(k) for k in ("name", "datatype", "shape", "data")} for o in answer["outputs"]]}
    return answer


def check_answers(started: dict[str, Server], cells=CELLS, sent: dict[str, payloads.Payload] | None = None) -> dict:
    """Each side's answer to each of its cells against the service's; SystemExit naming every difference."""
    sent = sent or bodies()
    out, problems = {}, []
    for cell in cells:
        answers = {}
        if cell.grpc:
            for side in cell.sides:
                answers[side] = grpc_answer(f"127.0.0.1:{started[side].grpc_port}", grpc_bodies()[cell.endpoint])
        p = sent.get(cell.endpoint)
        for side in () if cell.grpc else cell.sides:
            status, body = request(started[side].url, "POST", p.path, p.body, p.content_type, timeout=30)
            if status != 200:
                problems.append(f"{side} {p.path}: {status} {body[:300]!r}")
                continue
            answers[side] = comparable(cell.endpoint, json.loads(body))
        reference = answers.get("service")
        for side, answer in answers.items():
            found = differences(reference, answer) if reference is not None else ["no answer from the service"]
            out.setdefault(cell.endpoint, {})[side] = not found
            problems += [f"{side} {p.path}: {d}" for d in found[:5]]
    if problems:
        raise SystemExit("the sides do not give the same answers:\n  " + "\n  ".join(problems))
    return out


def start_all(names: tuple[str, ...], logdir: Path, home: Path, ready_timeout: float, triton_delay_us: int
              ) -> dict[str, Server]:
    """Every side at once (the service, the baseline, the peers), each waited for; stops them all if one fails."""
    started: dict[str, Server] = {}
    try:
        started["service"] = start_service(home=home, logdir=logdir)
        started["baseline"] = start_baseline(logdir=logdir)
        for name in names:
            options = {"max_queue_delay_us": triton_delay_us} if name == "triton" else {}
            started[name] = servers.start(name, logdir, **options)
        for side, s in started.items():
            s.wait_ready(ready_timeout, poll=0.2)
            print(f"  {side:13s} ready at {s.url}", flush=True)
    except BaseException:
        stop_all(started)
        raise
    return started


def stop_all(started: dict[str, Server]) -> None:
    for s in started.values():
        if not s.log_file.closed:  # not stopped yet
            s.stop()


def split_note(row: dict) -> str:
    """How a gRPC run's connections fell on a server with several workers, for its line ("  connections 5/3")."""
    split = row.get("connections_per_worker") or []
    return f"  connections {'/'.join(map(str, split))}" if len(split) > 1 and sum(split) else ""


def idle_cpu(started: dict[str, Server], seconds: float = 3) -> dict[str, float]:
    """Each side's CPU use with no load, in cores (LitServe's workers poll their queues: ~0.08 here)."""
    before = {side: s.cpu_seconds() for side, s in started.items()}
    time.sleep(seconds)
    return {side: round((s.cpu_seconds() - before[side]) / seconds, 3) for side, s in started.items()}


def measure(started: dict[str, Server], cells, sent, files, rounds: int, duration: float, warmup: float,
            idle: dict[str, float]) -> list[dict]:
    """Every cell on each of its sides, `rounds` times, the order of sides reversed every other round and cell; every
    server back to its own idle CPU use (+ IDLE_MARGIN of a core) before each run. First `warmup` s of unrecorded
    load per cell and side."""
    def run(cell: Cell, side: str, seconds: float) -> dict:
        s = started[side]
        if cell.grpc:
            return grpc_run(s, files[cell.endpoint], cell, seconds, side)
        return wrk.run(s.url, sent[cell.endpoint], files[cell.endpoint], cell.concurrency, seconds, side,
                       s.cpu_seconds).as_dict()

    for cell in cells:
        for side in cell.sides if warmup else ():
            run(cell, side, warmup)
    rows = []
    for r in range(rounds):
        for i, cell in enumerate(cells):
            for side in cell.sides if (i + r) % 2 == 0 else cell.sides[::-1]:
                for other, s in started.items():
                    s.wait_idle(busy_fraction=idle[other] + IDLE_MARGIN)
                res = run(cell, side, duration)
                rows.append({**res, "round": r})
                print(f"  r{r} {cell.key:26s} {side:13s} {res['rps']:8.1f} 2xx/s  p50 {res['p50_ms']:7.2f}  "
                      f"p99 {res['p99_ms']:7.2f} ms  non-2xx {res['non_2xx']}  transport errors "
                      f"{res['transport_errors']}" + split_note(res), flush=True)
    return rows


def grpc_path(cell: Cell) -> str:
    """How the Markdown names a gRPC cell's call."""
    return f"gRPC ModelInfer {cell.endpoint.removeprefix('grpc_').replace('_', '-')}"


def table_text(results: dict) -> str:
    lines = [f"{'cell':26s} {'side':13s} {'2xx/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'non-2xx':>8s} {'errors':>7s} "
             f"{'CPU ms/req':>10s}"]
    for cell in results["cells"]:
        for r in results["table"]:
            if (r["endpoint"], r["concurrency"]) == (cell["endpoint"], cell["concurrency"]):
                lines.append(f"{cell['endpoint'] + '@' + str(cell['concurrency']):26s} {r['side']:13s} {r['rps']:9.1f} "
                             f"{r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['non_2xx']:8d} {r['transport_errors']:7d} "
                             f"{r['server_cpu_ms_per_req']:10.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="times every cell is run on every side (default 3)")
    ap.add_argument("--duration", type=float, default=5, help="seconds per wrk run (default 5)")
    ap.add_argument("--warmup", type=float, default=1, help="seconds of unrecorded load per cell and side (default 1; 0: none)")
    ap.add_argument("--peers", nargs="+", default=list(PEERS), choices=PEERS, help="which peers (default: all)")
    ap.add_argument("--cells", nargs="+", choices=[c.key for c in CELLS], default=[c.key for c in CELLS],
                    help="which cells (default: all), e.g. grpc_mnist_fc@64")
    ap.add_argument("--triton-queue-delay-us", type=int, default=0,
                    help="Triton's dynamic batcher max_queue_delay_microseconds for mnist-fc (default 0, its own)")
    ap.add_argument("--ready-timeout", type=float, default=180, help="seconds each server may take to become ready")
    ap.add_argument("--json", type=Path, help="results file (default harness/results/peers-<UTC date>.json)")
    args = ap.parse_args(argv)

    wrk.wrk_path()
    t0 = time.perf_counter()
    names = tuple(n for n in PEERS if n in args.peers)
    cells = [Cell(c.endpoint, c.concurrency, tuple(s for s in c.sides if s in ("service", "baseline", *names)), c.goal)
             for c in CELLS if c.key in args.cells]
    cells = [c for c in cells if len(c.sides) > 1]
    print("1/4 venvs (build/peers/)", flush=True)
    built = {n: venvs.ensure(n) for n in names}
    for n, b in built.items():
        print(f"  {n:13s} {'built now in ' + str(b['build_s']) + ' s' if b['built_now'] else 'reused'}, "
              f"{b['size_mib']} MiB: {', '.join(b['pins'])}", flush=True)
    logdir = Path(tempfile.mkdtemp(prefix="harness-peers-"))
    sent = bodies()
    files = payloads.write_bodies(logdir / "bodies", sent)
    for name, body in grpc_bodies().items():
        files[name] = logdir / "bodies" / f"{name}.bin"
        files[name].write_bytes(body)
    loadavg = report.machine()["loadavg_at_start"]
    if loadavg[0] > 0.5:
        print(f"warning: load average {loadavg}: something else is using the CPUs", flush=True)

    print(f"2/4 start every side at once (logs in {logdir})", flush=True)
    started = start_all(names, logdir, logdir / "bentoml-home", args.ready_timeout, args.triton_queue_delay_us)
    results: dict = {"command": ".venv/bin/python -m harness.peers" + "".join(f" {a}" for a in (argv or sys.argv[1:])),
                     "duration_s": args.duration, "rounds": args.rounds, "warmup_s": args.warmup,
                     "triton_queue_delay_us": args.triton_queue_delay_us,
                     "grpc_channels": GRPC_CHANNELS,
                     "cells": [{"endpoint": c.endpoint, "concurrency": c.concurrency, "sides": list(c.sides),
                                "goal": c.goal, "path": grpc_path(c) if c.grpc else sent[c.endpoint].path}
                               for c in cells],
                     "peers": {n: {k: b[k] for k in ("build_s", "size_mib", "pins", "freeze")} for n, b in built.items()}}
    try:
        time.sleep(2)  # start-up work settles before the idle readings
        print("3/4 same answers on every side", flush=True)
        results["same_answers"] = check_answers(started, cells, sent)
        results["memory_mib"] = {side: {"idle_tree": round(s.rss() / 2**20, 1)} for side, s in started.items()}
        results["idle_cpu_cores"] = idle_cpu(started)
        print(f"4/4 wrk: {args.rounds} round(s) x {len(cells)} cells, {args.duration:g} s each", flush=True)
        results["runs"] = measure(started, cells, sent, files, args.rounds, args.duration, args.warmup,
                                  results["idle_cpu_cores"])
        results["table"] = summarise(results["runs"])
        for side, s in started.items():
            results["memory_mib"][side]["after_load_tree"] = round(s.rss() / 2**20, 1)
    finally:
        stop_all(started)
    results["elapsed_s"] = round(time.perf_counter() - t0, 1)
    path = report.save("peers", results, args.json)
    print(table_text(results))
    for goal, measured, target, met in render.peer_goals(json.loads(path.read_text())):
        print(f"  goal {goal}: {measured} (target {target}) {'met' if met else 'NOT MET'}")
    print(f"wrote {path} in {results['elapsed_s']:.0f} s")


if __name__ == "__main__":
    main()
