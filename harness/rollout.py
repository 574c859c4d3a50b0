"""A rolling update behind a real load balancer: two replicas behind HAProxy, each replaced in turn by one serving a retrained model, under closed loops of HTTP and gRPC clients; no request may fail, and the answers' version must switch.

    python -m harness.rollout                    # 3 runs (retrains the temperature model once: needs torch)
    python -m harness.rollout --runs 1 --hogs 1  # beside a CPU hog
    python -m harness.rollout --new-version DIR  # a version folder of temperature-linear exported by training

Each replica is `bentoml serve` in its default configuration on ports (HTTP and gRPC) and a model store of its
own; HAProxy (Debian's, `apt-get install haproxy`) balances --clients closed-loop HTTP clients (testkit.driver,
keep-alive) and --grpc-clients gRPC callers (testkit.grpc_load, ModelInfer over HTTP/2 on 2 connections) over
them, checking /readyz every 500 ms (`fall 2`, `rise 2`; `HAPROXY_CONFIG` below is the whole configuration,
what docs/deploy.md recommends). Then, for each replica in turn: SIGTERM to its `bentoml serve` process (it
drains: not ready, still answering); once it has exited, a replica of the new version starts on the same port
(the code and models/ of this tree, with temperature-linear retrained with another seed and made the default in
its serving file) and the next
replica is replaced once HAProxy has it up. Clients keep sending throughout and for --settle s after.

Pass: every HTTP request answered 2xx (no transport error, no 5xx from HAProxy) and every gRPC call OK, each
replica exited 0 within its drain plus 2 s (ROLLOUT_EXIT_MARGIN_S), and the answers' `version` went from only
the old to only the new, over both protocols.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import artifacts
import artifacts.serving
from harness.report import finish, service_settings
from service.settings import Settings
from testkit import host
from testkit.driver import Driver
from testkit.grpc_load import Calls, closed_loop, infer_request
from testkit.payloads import bench_payloads
from service.v2.proto import grpc_predict_v2_pb2 as pb
from testkit.server import REPO, Server, ServerFailed, free_port, parse_env, start_service

MODEL = artifacts.TEMPERATURE_LINEAR  # the model retrained for the new version
# Each replica exits within its drain plus this: two replicas, HAProxy and the clients share the cores here, and
# the supervisor's own exit took up to 1.1 s after the drain under that load (harness.drain holds 1 s, alone).
ROLLOUT_EXIT_MARGIN_S = 2.0


@contextlib.contextmanager
def more_files():
    """As many file descriptors as the system allows, for the clients' connections."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
HAPROXY_CONFIG = """\
global
    maxconn 4096
    nbthread 1
    stats socket {stats} mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch 1

listen thermo_digits
    bind 127.0.0.1:{port}
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 500ms fastinter 250ms downinter 500ms fall 2 rise 2
{servers}

listen thermo_digits_grpc
    bind 127.0.0.1:{grpc_port} proto h2
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 500ms fastinter 250ms downinter 500ms fall 2 rise 2
{grpc_servers}
"""


def haproxy_path() -> str:
    path = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)
    if path is None:
        raise SystemExit("haproxy is not installed: apt-get install -y haproxy (Debian's 2.6), or `make haproxy`")
    return path


@dataclass
class Balancer:
    """HAProxy in front of named servers, HTTP and gRPC; its stats socket says which it has up in both."""

    proc: subprocess.Popen
    port: int
    grpc_port: int
    stats: Path

    @classmethod
    def start(cls, servers: dict[str, tuple[int, int]], where: Path) -> "Balancer":
        """`servers`: name -> (HTTP port, gRPC port); gRPC servers are checked on their HTTP port's /readyz."""
        port, grpc_port, stats = free_port(), free_port(), where / "haproxy.sock"
        lines = "\n".join(f"    server {name} 127.0.0.1:{http} check" for name, (http, _) in servers.items())
        grpc_lines = "\n".join(f"    server {name} 127.0.0.1:{grpc} proto h2 check port {http} check-proto h1"
                               for name, (http, grpc) in servers.items())
        config = where / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(stats=stats, port=port, servers=lines, grpc_port=grpc_port,
                                                grpc_servers=grpc_lines))
        with open(where / "haproxy.log", "w") as log:
            proc = subprocess.Popen([haproxy_path(), "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        balancer = cls(proc, port, grpc_port, stats)
        balancer.wait(lambda up: set(up) == set(servers), 30)
        return balancer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> set[str]:
        """The servers HAProxy would send requests to now, over HTTP and gRPC both."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.stats))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        rows = [line.split(",") for line in data.decode().splitlines() if line and not line.startswith("#")]
        servers = [r for r in rows if r[1] not in ("FRONTEND", "BACKEND")]
        names = {r[1] for r in servers}
        return {n for n in names if all(r[17].startswith("UP") for r in servers if r[1] == n)}

    def wait(self, condition, timeout: float) -> float:
        """Seconds until condition(up()) held; TimeoutError if not within `timeout`."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.proc.returncode}")
            with contextlib.suppress(OSError):
                if condition(self.up()):
                    return time.monotonic() - started
            time.sleep(0.05)
        raise TimeoutError("HAProxy did not reach the expected state")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def retrain(out: Path, seed: int = 3) -> Path:
    """The linear temperature model trained again with another seed (`python -m training`; needs torch), exported to
    `out`/<name>/<version>/ (and published into a throw-away model store): its folder."""
    subprocess.run([sys.executable, "-m", "training", "temperature", "--model", "linear", "--seed", str(seed),
                    "--log-every", "1000000", "--out", str(out)], cwd=REPO, check=True, capture_output=True,
                   env={**os.environ, "BENTOML_HOME": tempfile.mkdtemp(prefix="rollout-train-home-")})
    old = artifacts.serving.read().models[MODEL].default
    return next(p for p in (out / MODEL).iterdir() if p.name != old and (p / artifacts.METADATA_FILE).is_file())


def new_version_tree(model_dir: Path, where: Path) -> Path:
    """A tree serving this repository's code and versions plus `model_dir`, which its serving file makes the default
    of temperature-linear: what a release that promoted it carries."""
    tree = where / "new-version"
    for entry in ("service", "artifacts", "bentofile.yaml"):
        (shutil.copytree if (REPO / entry).is_dir() else shutil.copy2)(REPO / entry, tree / entry)
    serving = artifacts.serving.read()
    for name, entry in serving.models.items():
        for version in entry.served():
            (tree / "models" / name / version).mkdir(parents=True)
            for f in artifacts.version_dir(name, version).iterdir():
                if f.is_file():
                    (tree / "models" / name / version / f.name).symlink_to(f.resolve())
    new = artifacts.read_metadata(model_dir)["version"]
    shutil.copytree(model_dir, tree / "models" / MODEL / new, dirs_exist_ok=True)
    artifacts.serving.write(serving.with_model(MODEL, artifacts.serving.ModelServing(new)),
                            tree / "models" / "serving.json")
    return tree


def version_of(body: bytes) -> str | None:
    try:
        return json.loads(body).get("version")
    except ValueError:
        return None


def grpc_version_of(answer: bytes) -> str:
    return pb.ModelInferResponse.FromString(answer).model_version


GRPC_REQUEST = infer_request(MODEL, "readings", "FP64", np.array([[35.7], [55.9]]))


async def replace(name: str, old: Server, tree: Path, balancer: Balancer, drain_s: float, workers: int | None,
                  env: dict[str, str], logdir: Path) -> tuple[Server, dict]:
    """SIGTERM `old`; once it has exited, a new-version replica on its port; return it once HAProxy has it up."""
    signalled = time.monotonic()
    os.kill(old.proc.pid, signal.SIGTERM)
    down_after = await asyncio.to_thread(balancer.wait, lambda up: name not in up, drain_s + 30)  # in either
    status = await asyncio.to_thread(old.proc.wait, drain_s + 30)
    exited_after = time.monotonic() - signalled
    new = await asyncio.to_thread(start_service, cwd=tree, home=tempfile.mkdtemp(prefix="rollout-home-"),
                                  workers=workers, env={**env, "SERVICE_GRPC_PORT": str(old.grpc_port)}, port=old.port,
                                  logdir=logdir)
    ready_after = await asyncio.to_thread(new.wait_ready, 120, 0.1)
    up_after = await asyncio.to_thread(balancer.wait, lambda up: name in up, 60)
    return new, {"replica": name, "exit_status": status, "exited_after_s": round(exited_after, 3),
                 "marked_down_after_s": round(down_after, 3), "new_ready_after_start_s": round(ready_after, 3),
                 "new_up_in_haproxy_after_ready_s": round(up_after, 3)}


def switched(versions: list, marks: tuple[int, int]) -> dict:
    """The versions answered before the first replacement, after the last, and how many of each in between."""
    during = versions[marks[0]:marks[1]]
    return {"versions_before": sorted(set(versions[:marks[0]])), "versions_after": sorted(set(versions[marks[1]:])),
            "answers_during": {v: during.count(v) for v in set(during)}}


async def rollout(balancer: Balancer, replicas: dict[str, Server], tree: Path, clients: int, grpc_clients: int,
                  warmup: float, settle: float, drain_s: float, workers: int | None, env: dict[str, str],
                  logdir: Path) -> tuple[dict, dict[str, Server]]:
    """Clients through `balancer` while each of `replicas` is replaced in turn; the figures and the new replicas."""
    driver = Driver(balancer.url, [(bench_payloads()["temperature"], 1.0)], timeout=30, answer=version_of)
    runner = asyncio.create_task(driver.run(3600, clients=clients, drain=35))
    stop, calls = asyncio.Event(), Calls()
    grpc_runner = asyncio.create_task(closed_loop(f"127.0.0.1:{balancer.grpc_port}", GRPC_REQUEST, grpc_clients, 3600,
                                                  channels=2, answer=grpc_version_of, stop=stop, error_pause=0.05,
                                                  calls=calls))
    await asyncio.sleep(warmup)
    steps, marks, grpc_marks = [], [], []
    for name in list(replicas):
        marks.append(len(driver.answers))
        grpc_marks.append(len(calls.answers))
        replicas[name], step = await replace(name, replicas[name], tree, balancer, drain_s, workers, env, logdir)
        steps.append(step)
    await asyncio.sleep(0.5)  # answers already on their way from the old replicas
    marks.append(len(driver.answers))
    grpc_marks.append(len(calls.answers))
    await asyncio.sleep(settle)
    driver.stop()
    stop.set()
    records = await runner
    await grpc_runner
    old_version = artifacts.serving.read().models[MODEL].default
    new_version = artifacts.serving.read(tree / "models" / "serving.json").models[MODEL].default
    return {
        "requests": len(records), "answered_2xx": int(records.ok.sum()),
        "non_2xx": int(((records.status > 0) & ~records.ok).sum()), "transport_errors": int(records.transport_errors.sum()),
        "by_status": records.by_status(), "not_ok": records.not_ok(20),
        "ok_per_s": round(float(records.ok.sum()) / max(records.client_wall_s, 1e-9), 1),
        "old_version": old_version, "new_version": new_version, **switched(driver.answers, (marks[0], marks[-1])),
        "grpc": {**calls.summary(), **switched(calls.answers, (grpc_marks[0], grpc_marks[-1]))},
        "steps": steps,
    }, replicas


def passed(run: dict, exit_within_s: float) -> bool:
    grpc = run["grpc"]
    return (run["non_2xx"] == 0 and run["transport_errors"] == 0 and run["answered_2xx"] > 0
            and run["versions_before"] == [run["old_version"]] and run["versions_after"] == [run["new_version"]]
            and grpc["ok"] > 0 and grpc["codes"] == {"OK": grpc["ok"]}
            and grpc["versions_before"] == [run["old_version"]] and grpc["versions_after"] == [run["new_version"]]
            and all(s["exit_status"] == 0 and s["exited_after_s"] <= exit_within_s for s in run["steps"]))


def one_run(tree: Path, clients: int, warmup: float, settle: float, workers: int | None, env: dict[str, str],
            grpc_clients: int = 8, exit_within_s: float | None = None) -> dict:
    """Two old-version replicas behind HAProxy, both replaced under load; the run's figures (`passed` included: nothing
    failed, the versions switched, and each replica exited 0 within `exit_within_s`, default its drain plus
    ROLLOUT_EXIT_MARGIN_S)."""
    drain_s = Settings.from_env({**os.environ, **env}).drain_s
    logdir = Path(tempfile.mkdtemp(prefix="harness-rollout-"))
    replicas = {name: start_service(home=tempfile.mkdtemp(prefix="rollout-home-"), workers=workers, env=env,
                                    logdir=logdir) for name in ("a", "b")}
    balancer = None
    try:
        for r in replicas.values():
            r.wait_ready()
        balancer = Balancer.start({n: (r.port, r.grpc_port) for n, r in replicas.items()}, logdir)
        with more_files():  # asyncio (not uvloop: grpc.aio needs asyncio's loop) for HTTP and gRPC clients alike
            run, replicas = asyncio.run(rollout(balancer, replicas, tree, clients, grpc_clients, warmup, settle,
                                                drain_s, workers, env, logdir))
    except (ServerFailed, TimeoutError, RuntimeError) as e:
        run = {"error": str(e), "steps": []}
    finally:
        if balancer is not None:
            balancer.stop()
        for r in replicas.values():
            if r.proc.poll() is None:
                r.stop()
    bound = drain_s + ROLLOUT_EXIT_MARGIN_S if exit_within_s is None else exit_within_s
    run["passed"] = "error" not in run and passed(run, bound)
    run["logs"] = str(logdir)
    return run


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clients", type=int, default=16, help="closed-loop HTTP clients through HAProxy (default 16)")
    ap.add_argument("--grpc-clients", type=int, default=8, help="closed-loop gRPC callers through HAProxy (default 8)")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of load before the first replacement")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds of load after the last replacement")
    ap.add_argument("--workers", type=int, default=None, help="pin each replica's worker count (default: its own)")
    ap.add_argument("--new-version", type=Path, help=f"a version folder of {MODEL} (default: retrain it, needs torch)")
    ap.add_argument("--hogs", type=int, default=0, help="processes each keeping one core busy for the whole run")
    ap.add_argument("--env", action="append", metavar="KEY=VALUE", help="environment of every replica, e.g. "
                    "SERVICE_SKIP_PATCHES=drain to see what the drain is for (default: none, the defaults)")
    ap.add_argument("--out", help="results file (default harness/results/rollout-<date>.json)")
    args = ap.parse_args(argv)
    env = parse_env(args.env)
    haproxy_path()
    where = Path(tempfile.mkdtemp(prefix="harness-rollout-tree-"))
    model_dir = args.new_version if args.new_version else retrain(where / "models")
    tree = new_version_tree(model_dir, where)
    runs = []
    with host.cpu_hogs(args.hogs):
        for i in range(args.runs):
            run = one_run(tree, args.clients, args.warmup, args.settle, args.workers, env, args.grpc_clients)
            runs.append(run)
            grpc = run.get("grpc", {})
            print(f"run {i + 1}: HTTP {run.get('answered_2xx')} answered, non-2xx {run.get('non_2xx')}, transport errors "
                  f"{run.get('transport_errors')}, versions {run.get('versions_before')} -> {run.get('versions_after')}; "
                  f"gRPC {grpc.get('codes')}, versions {grpc.get('versions_before')} -> {grpc.get('versions_after')}; "
                  f"steps {run.get('steps')}{' error: ' + run['error'] if 'error' in run else ''}: "
                  f"{'pass' if run['passed'] else 'FAIL'}", flush=True)
    haproxy = subprocess.run([haproxy_path(), "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    results = {"command": "python -m harness.rollout" + "".join(f" {a}" for a in sys.argv[1:]), "haproxy": haproxy,
               "haproxy_config": HAPROXY_CONFIG, "clients": args.clients, "cpu_hogs": args.hogs, "runs": runs,
               "passed_runs": sum(r["passed"] for r in runs), "of": len(runs)}
    results["passed"] = results["passed_runs"] == results["of"]
    sys.exit(finish("rollout", results, args.out, service=service_settings(env, args.workers)))


if __name__ == "__main__":
    main()
