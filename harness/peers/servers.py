"""Start each peer from its own venv as a harness Server (its readiness paths, its way of stopping), on free ports."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.peers import venvs
from testkit.server import Server, free_port, request

HERE = Path(__file__).resolve().parent


@dataclass
class PeerServer(Server):
    """A Server that is ready when every one of `ready_paths` answers 200. Stopped with SIGTERM to its process group
    (or to its first process alone, when `term_group` is false: PyTriton's own process then stops Triton and frees
    its shared memory), then SIGKILL to the group after `stop_grace_s`; `scratch` folders are removed after."""

    ready_paths: tuple[str, ...] = ("/readyz",)
    grpc_port: int = 0  # its Open Inference Protocol gRPC port (0: none)
    stop_grace_s: float = 20
    term_group: bool = True
    scratch: list[Path] = field(default_factory=list)

    def ready(self, timeout: float = 1.0) -> bool:
        try:
            return all(request(self.url, path=p, timeout=timeout)[0] == 200 for p in self.ready_paths)
        except OSError:
            return False

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.term_group:
                os.killpg(self.proc.pid, signal.SIGTERM)
            else:
                self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace_s
        while time.monotonic() < deadline and (self.proc.poll() is None or group_alive(self.proc.pid)):
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):  # stragglers (tritonserver ignores SIGTERM for a while)
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.log_file.close()
        for path in self.scratch:
            shutil.rmtree(path, ignore_errors=True)


def group_alive(pgid: int) -> bool:
    """Whether any process is left in group `pgid` (a zombie counts until its parent reaps it)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def spawn(name: str, cmd: list[str], env: dict[str, str], port: int, logdir: Path, **kwargs) -> PeerServer:
    """`cmd` from this folder in a new session (its own process group), stdout and stderr to logdir/<name>-<port>.log."""
    log = open(logdir / f"{name}-{port}.log", "w+")
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=HERE, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return PeerServer(name, proc, port, log, started, **kwargs)


def start_bentoml_docs(logdir: Path, python: str | Path | None = None) -> PeerServer:
    """`bentoml serve bentoml_docs:ThermoDigitsDocs` (production mode, one worker: BentoML's default) with an empty
    BENTOML_HOME, by its venv's Python or `python` (one with the same pins: the project's own venv has them)."""
    port, home = free_port(), Path(tempfile.mkdtemp(prefix="bentoml-home-", dir=logdir))
    cmd = [str(python or venvs.PEERS["bentoml-docs"].python_bin), "-m", "bentoml", "serve", "bentoml_docs:ThermoDigitsDocs",
           "--host", "127.0.0.1", "--port", str(port)]
    return spawn("bentoml-docs", cmd, {"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}, port, logdir,
                 scratch=[home])


def start_litserve(logdir: Path) -> PeerServer:
    port = free_port()
    cmd = [str(venvs.PEERS["litserve"].python_bin), "litserve_server.py", "--port", str(port)]
    return spawn("litserve", cmd, {}, port, logdir, ready_paths=("/health",))


def start_triton(logdir: Path, max_queue_delay_us: int = 0) -> PeerServer:
    """PyTriton on Python 3.12 (its lib/ on LD_LIBRARY_PATH), ready when both models are loaded; workspace under logdir."""
    python = venvs.PEERS["triton"].python_bin
    http, grpc, metrics = free_port(), free_port(), free_port()
    workspace = logdir / f"triton-workspace-{http}"  # PyTriton makes it, and refuses one that exists
    cmd = [str(python), "pytriton_server.py", "--http-port", str(http), "--grpc-port", str(grpc),
           "--metrics-port", str(metrics), "--max-queue-delay-us", str(max_queue_delay_us), "--workspace", str(workspace)]
    return spawn("triton", cmd, {"LD_LIBRARY_PATH": venvs.library_path(python)}, http, logdir,
                 ready_paths=("/v2/models/temperature-linear/ready", "/v2/models/mnist-fc/ready"), grpc_port=grpc,
                 stop_grace_s=15, term_group=False, scratch=[workspace])


STARTERS = {"bentoml-docs": start_bentoml_docs, "litserve": start_litserve, "triton": start_triton}


def start(name: str, logdir: Path, **options) -> PeerServer:
    """Start peer `name` (its venv must exist: venvs.ensure) and return at once; call wait_ready() on it."""
    if not venvs.PEERS[name].python_bin.exists():
        raise FileNotFoundError(f"no venv for the {name} peer: run venvs.ensure({name!r}) first")
    return STARTERS[name](logdir, **options)
