"""Start, probe and stop the two servers under test (`bentoml serve` and the uvicorn baseline), and read their workers' RSS and CPU."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from reliability.server import free_port

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


@dataclass
class Server:
    """A running server: its process group, port and log; `workers()` finds the request-serving processes."""

    name: str
    proc: subprocess.Popen
    port: int
    log: Path
    expected_workers: int
    started: float = field(default_factory=time.perf_counter)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> list[psutil.Process]:
        """The processes that run the app: BentoML's circus workers, or uvicorn's spawned children."""
        root = psutil.Process(self.proc.pid)
        found = []
        for p in root.children(recursive=True):
            try:
                cmd = " ".join(p.cmdline())
            except psutil.Error:
                continue
            if "_bentoml_impl.worker.service" in cmd or ("multiprocessing" in cmd and "spawn_main" in cmd
                                                         and "resource_tracker" not in cmd):
                found.append(p)
        return sorted(found, key=lambda p: p.pid) or [root]  # uvicorn with one worker serves from its main process

    def rss_mib(self) -> list[float]:
        return [round(p.memory_info().rss / 2**20, 1) for p in self.workers()]

    def cpu_seconds(self) -> float:
        """User+system CPU of the whole process tree (workers and supervisor) so far."""
        total = 0.0
        root = psutil.Process(self.proc.pid)
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def wait_idle(self, timeout: float = 15, window: float = 0.2, busy_fraction: float = 0.05) -> None:
        """Return once the server used under `busy_fraction` of a core for `window` s: what the previous run queued is done."""
        deadline = time.perf_counter() + timeout
        before = self.cpu_seconds()
        while time.perf_counter() < deadline:
            time.sleep(window)
            now = self.cpu_seconds()
            if now - before < busy_fraction * window:
                return
            before = now

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def request(url: str, method: str = "GET", path: str = "/readyz", body: bytes | None = None,
            content_type: str | None = None, timeout: float = 10) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": content_type} if content_type else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_ready(server: Server, timeout: float = 120, poll: float = 0.02) -> float:
    """Seconds from process start until GET /readyz answered 200 (polled every `poll` s)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}; see {server.log}")
        with contextlib.suppress(OSError):
            if request(server.url, timeout=2)[0] == 200:
                return time.perf_counter() - server.started
        time.sleep(poll)
    raise RuntimeError(f"{server.name} not ready after {timeout} s; see {server.log}")


def _spawn(name: str, cmd: list[str], port: int, env: dict[str, str], logdir: Path, workers: int) -> Server:
    log = logdir / f"{name}-{port}.log"
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    return Server(name, proc, port, log, workers, started)


def base_env(workers: int, threads: int | None) -> dict[str, str]:
    # No load shedding (service/shedding.py): a benchmark measures capacity and latency, not 429s.
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", "SERVICE_SHED_DEPTH": "0", "SERVICE_INFLIGHT_BYTES": str(2**40)}
    if threads is not None:
        env["SERVICE_THREADS"] = str(threads)
    return env


def start_service(workers: int, home: Path, logdir: Path, threads: int | None = None, extra_config: str = "") -> Server:
    """`bentoml serve` (production mode, the default) of the repo root, `workers` workers pinned by config.

    extra_config: more BENTOML_CONFIG_OPTIONS, e.g. "services.ThermoDigits.logging.access.enabled=false".
    """
    env = base_env(workers, threads)
    env["BENTOML_HOME"] = str(home)
    # Pins the worker count whatever @bentoml.service says, so both sides always run the same number, and lifts
    # the load shedding limit (traffic.max_concurrency): this measures capacity and latency, not 429s.
    env["BENTOML_CONFIG_OPTIONS"] = (f"services.ThermoDigits.workers={workers} "
                                     f"services.ThermoDigits.traffic.max_concurrency=100000 {extra_config}").strip()
    port = free_port()
    cmd = [PYTHON, "-m", "bentoml", "serve", ".", "--host", "127.0.0.1", "--port", str(port)]
    return _spawn("service", cmd, port, env, logdir, workers)


def start_baseline(workers: int, logdir: Path, threads: int | None = None) -> Server:
    """uvicorn serving benchmarks.baseline:app with the same worker count and access log off (BentoML's goes to its log)."""
    port = free_port()
    cmd = [PYTHON, "-m", "uvicorn", "benchmarks.baseline:app", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--no-access-log", "--log-level", "warning"]
    return _spawn("baseline", cmd, port, base_env(workers, threads), logdir, workers)


def new_home() -> Path:
    return Path(tempfile.mkdtemp(prefix="bench-bentoml-home-"))
