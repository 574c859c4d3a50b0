"""Start, probe and stop the servers under test (`bentoml serve` of the repo or a Bento, and the uvicorn baseline), and read their processes."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable
from urllib.parse import urlsplit

import psutil

REPO = Path(__file__).resolve().parents[1]
WORKER_MARK = "_bentoml_impl.worker.service"
PORT_RETRIES = 3  # in the command line of BentoML's request-serving processes
PICKED_GRPC_PORT = "THERMODIGITS_TESTKIT_PICKED_GRPC_PORT"  # set when start_service chose SERVICE_GRPC_PORT itself
# An access-log line of BentoML's worker (and of the door, which writes the same): its worker index, path and status.
ACCESS_LINE = re.compile(r"\[entry_service:[^\]]*:(\d+)\] \S+ \(scheme=\w+,method=\w+,path=([^,)]*)[^)]*\) \(status=(\d+)")


class ServerFailed(RuntimeError):
    """The server exited or did not become ready in time; the message ends with its log."""


def established(process: psutil.Process, local_port: int | None = None, remote_port: int | None = None) -> int:
    """The established TCP connections `process` holds whose local end is on `local_port` (a server's accepted ones)
    or whose remote end is (a client's to `remote_port`); psutil.Error when the process is gone."""
    return sum(1 for c in process.net_connections("tcp") if c.status == psutil.CONN_ESTABLISHED
               and (local_port is None or (c.laddr and c.laddr.port == local_port))
               and (remote_port is None or (c.raddr and c.raddr.port == remote_port)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, method: str = "GET", path: str = "/readyz", body: bytes | None = None,
            content_type: str | None = None, timeout: float = 10) -> tuple[int, bytes]:
    """One blocking request: (status, body)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": content_type} if content_type else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@dataclass
class Server:
    """A running server in its own process group: port, log, and its process tree."""

    name: str
    proc: subprocess.Popen | None  # None: a server started elsewhere (`external`), known by its URL only
    port: int
    log_file: IO[str] | None  # stdout and stderr (opened w+: seek(0) and read() to see it)
    started: float = field(default_factory=time.perf_counter)
    host: str = "127.0.0.1"
    respawn: Callable[[int], subprocess.Popen] | None = None  # starts the same server on another port
    env: dict[str, str] = field(default_factory=dict)  # the server's environment (its SERVICE_GRPC_PORT among it)

    @property
    def grpc_port(self) -> int:
        """The port of its gRPC service (0: none)."""
        return int(self.env.get("SERVICE_GRPC_PORT") or 0)

    @property
    def grpc_target(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @classmethod
    def external(cls, url: str) -> "Server":
        parts = urlsplit(url)
        return cls("external", None, parts.port or 80, None, host=parts.hostname)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        self.log_file.flush()
        return Path(self.log_file.name).read_text(errors="replace")

    def log_size(self) -> int:
        """Bytes of log so far: where the next lines will start (for answers_by_worker)."""
        self.log_file.flush()
        return Path(self.log_file.name).stat().st_size

    def answers_by_worker(self, since: int = 0, path: str | None = None) -> dict[int, int]:
        """2xx answers (to `path`, or any) each worker's access log recorded after byte `since` of the log: {worker: n}."""
        counts: dict[int, int] = {}
        with open(self.log_file.name, "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
        for worker, answered_path, status in ACCESS_LINE.findall(text):
            if status.startswith("2") and (path is None or answered_path == path):
                counts[int(worker)] = counts.get(int(worker), 0) + 1
        return counts

    def processes(self) -> list[psutil.Process]:
        """The started process and all its descendants (circus arbiter, workers; uvicorn's children)."""
        with contextlib.suppress(psutil.Error, AttributeError):
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        return []

    def workers(self) -> list[psutil.Process]:
        """The processes that serve requests: BentoML's workers, or uvicorn's spawned children (or uvicorn itself)."""
        found = []
        for p in self.processes()[1:]:
            with contextlib.suppress(psutil.Error):
                cmd = " ".join(p.cmdline())
                if WORKER_MARK in cmd or ("spawn_main" in cmd and "resource_tracker" not in cmd):
                    found.append(p)
        if not found and self.name == "baseline":
            return self.processes()[:1]  # uvicorn with one worker serves from its main process
        return sorted(found, key=lambda p: p.pid)

    def connections_per_worker(self, port: int | None = None) -> list[int]:
        """The established TCP connections to `port` (default: the HTTP port) that each worker holds, in workers()'
        order: with SO_REUSEPORT each new connection is one worker's, hashed by the kernel."""
        port = self.port if port is None else port
        counts = []
        for worker in self.workers():
            with contextlib.suppress(psutil.Error):
                counts.append(established(worker, local_port=port))
        return counts

    def rss(self) -> int:
        """Resident memory of the whole process tree, in bytes."""
        total = 0
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def rss_mib(self) -> list[float]:
        """Resident memory of each worker, MiB."""
        out = []
        for p in self.workers():
            with contextlib.suppress(psutil.Error):
                out.append(round(p.memory_info().rss / 2**20, 1))
        return out

    def cpu_seconds(self) -> float:
        """User + system CPU of the whole process tree so far."""
        total = 0.0
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def ready(self, timeout: float = 1.0) -> bool:
        try:
            return request(self.url, timeout=timeout)[0] == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 120, poll: float = 0.02, every_worker: bool = True) -> float:
        """Seconds from process start until GET /readyz answered 200 (polled every `poll` s) and, for the service with
        `every_worker`, every worker listens; ServerFailed if never.

        A server that lost its port to another process between free_port() and its bind (BentoML's supervisor
        picks its own ports the same way) is started again on another port, up to PORT_RETRIES times."""
        deadline = time.perf_counter() + timeout
        retries = PORT_RETRIES
        while not self.ready(timeout=2):
            if self.proc.poll() is not None and retries and self.respawn and "Address already in use" in self.log():
                retries -= 1
                self.port = free_port()
                if self.env.get(PICKED_GRPC_PORT):  # a gRPC port picked here may be what was taken: another too
                    self.env["SERVICE_GRPC_PORT"] = str(free_port())
                self.log_file.seek(0)
                self.log_file.truncate()
                self.proc = self.respawn(self.port)
                continue
            if self.proc.poll() is not None or time.perf_counter() > deadline:
                raise ServerFailed(f"{self.name} ({' '.join(self.proc.args)}) did not become ready:\n{self.log()[-4000:]}")
            time.sleep(poll)
        if every_worker and self.name == "service":
            self.wait_listening(deadline, poll)
        return time.perf_counter() - self.started

    def wait_listening(self, deadline: float, poll: float = 0.02) -> None:
        """Return once every worker listens on the HTTP port and the gRPC port (if any): until then /readyz may have
        been answered by the first worker up, and new connections all go to it. ServerFailed at `deadline`."""
        ports = {self.port, self.grpc_port} - {0}
        while True:
            workers = self.workers()
            if workers and all(ports <= self.listening(w) for w in workers):
                return
            if self.proc.poll() is not None or time.perf_counter() > deadline:
                raise ServerFailed(f"{self.name}: not every worker of {len(workers)} listens on {sorted(ports)}:\n"
                                   f"{self.log()[-4000:]}")
            time.sleep(poll)

    @staticmethod
    def listening(process: psutil.Process) -> set[int]:
        """The TCP ports `process` listens on."""
        with contextlib.suppress(psutil.Error):
            return {c.laddr.port for c in process.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
        return set()

    def wait_idle(self, timeout: float = 15, window: float = 0.2, busy_fraction: float = 0.05) -> None:
        """Return once the tree used under `busy_fraction` of a core for `window` s: what a previous run queued is done."""
        deadline = time.perf_counter() + timeout
        before = self.cpu_seconds()
        while time.perf_counter() < deadline:
            time.sleep(window)
            now = self.cpu_seconds()
            if now - before < busy_fraction * window:
                return
            before = now

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after 20 s."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log_file.close()


def _spawn(name: str, cmd: Callable[[int], list[str]], cwd: Path, env: dict[str, str], port: int,
           logdir: Path, cpus: set[int] | None = None) -> Server:
    """Start `cmd(port)` in its own process group (on the CPUs `cpus` only, as `taskset` would), its output to a log file in `logdir`."""
    log = open(logdir / f"{name}-{port}.log", "w+")
    started = time.perf_counter()
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    env = dict(env)  # the Server's: a respawn sees a gRPC port picked again

    def start(port: int) -> subprocess.Popen:
        return subprocess.Popen(cmd(port), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=pin)

    return Server(name, start(port), port, log, started, respawn=start, env=env)


def parse_env(pairs: list[str] | None) -> dict[str, str]:
    """`--env KEY=VALUE` options as a dict."""
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


def config_options(base: str = "", workers: int | None = None, bentoml_config: str = "") -> str:
    """BENTOML_CONFIG_OPTIONS for a run: `base`, the worker count when pinned (None: the service's default, one per
    usable CPU), then `bentoml_config` (none by default)."""
    pinned = f"services.ThermoDigits.workers={workers}" if workers is not None else ""
    return " ".join(filter(None, [base, pinned, bentoml_config]))


def start_service(target: str = ".", cwd: Path = REPO, home: str | Path | None = None, workers: int | None = None,
                  bentoml_config: str = "", env: dict[str, str] | None = None, logdir: Path | None = None,
                  port: int | None = None, cpus: set[int] | None = None) -> Server:
    """`bentoml serve <target>` (the repo root or a Bento tag; production mode) on `port` (default: a free one), in
    `home` (default: a fresh empty BENTOML_HOME: the first start imports the committed models), the service's own
    settings plus `env` (SERVICE_GRPC_PORT: a free port unless `env` names one), on the CPUs `cpus` (default: this
    process's)."""
    home = Path(home or tempfile.mkdtemp(prefix="harness-bentoml-home-"))
    full_env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", **(env or {})}
    if "SERVICE_GRPC_PORT" not in (env or {}):  # several servers at once, and 8001 may be taken on this host
        full_env.update({"SERVICE_GRPC_PORT": str(free_port()), PICKED_GRPC_PORT: "1"})
    if options := config_options(full_env.get("BENTOML_CONFIG_OPTIONS", ""), workers, bentoml_config):
        full_env["BENTOML_CONFIG_OPTIONS"] = options
    def cmd(port: int) -> list[str]:
        return [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1", "--port", str(port)]

    return _spawn("service", cmd, Path(cwd), full_env, port or free_port(), logdir or home, cpus)


def started_service(**kwargs) -> Server:
    """start_service(**kwargs), waited for: the ready Server, to stop when done (ServerFailed, the server stopped, if it
    never is)."""
    server = start_service(**kwargs)
    try:
        server.wait_ready(poll=0.2)
    except ServerFailed:
        server.stop()
        raise
    return server


def start_baseline(workers: int | None = None, env: dict[str, str] | None = None, logdir: Path | None = None) -> Server:
    """uvicorn serving harness.baseline:app with `workers` workers (None: as many as the service's default), access log
    off, on the service's stack (httptools, asyncio's loop)."""
    if workers is None:
        from service.cpus import default_workers

        workers = default_workers()

    def cmd(port: int) -> list[str]:
        return [sys.executable, "-m", "uvicorn", "harness.baseline:app", "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(workers), "--no-access-log", "--log-level", "warning", "--http", "httptools",
                "--loop", "asyncio"]

    full_env = {**os.environ, **(env or {})}
    return _spawn("baseline", cmd, REPO, full_env, free_port(), logdir or Path(tempfile.mkdtemp(prefix="harness-logs-")))


@contextlib.contextmanager
def serving(target: str = ".", cwd: Path = REPO, home: str | Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 120, workers: int | None = None, bentoml_config: str = ""):
    """`bentoml serve <target>` from `cwd` until the block ends; yields the ready Server, raises ServerFailed."""
    server = start_service(target, cwd, home, workers, bentoml_config, env)
    try:
        server.wait_ready(timeout, poll=0.5)
        yield server
    finally:
        server.stop()


def exit_status(cwd: Path = REPO, env: dict[str, str] | None = None, within: float = 30) -> tuple[int | None, str]:
    """`bentoml serve` from `cwd` with `env` added (a fresh model store unless BENTOML_HOME is in it): its exit
    status, or None if it still ran `within` seconds later (then killed), and its output."""
    full_env = {**os.environ, "BENTOML_HOME": tempfile.mkdtemp(prefix="bentoml-home-exit-"),
                "BENTOML_DO_NOT_TRACK": "true", "SERVICE_GRPC_PORT": str(free_port()), **(env or {})}
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", "--port", str(free_port())], cwd=cwd,
                                env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            status = proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            status = None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.seek(0)
        return status, log.read()
