"""Start a real `bentoml serve` on a free port and inspect its processes (RSS, workers); the tests use it too."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]


class ServerFailed(RuntimeError):
    """`bentoml serve` exited or did not become ready in time; the message ends with its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log_file: IO[str]  # the server's stdout and stderr (opened w+: seek(0) and read() to see it)

    def log(self) -> str:
        self.log_file.flush()
        return Path(self.log_file.name).read_text(errors="replace")

    def processes(self) -> list[psutil.Process]:
        """The `bentoml serve` process and all its descendants (circus arbiter, workers)."""
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def workers(self) -> list[psutil.Process]:
        """The processes that serve HTTP requests (BentoML's `_bentoml_impl.worker.service` workers)."""
        found = []
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                if any("_bentoml_impl.worker.service" in part for part in p.cmdline()):
                    found.append(p)
        return found

    def rss(self) -> int:
        """Resident memory of the whole process tree, in bytes."""
        total = 0
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def ready(self, timeout: float = 1.0) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False


@contextlib.contextmanager
def serving(target: str = ".", cwd: Path = REPO, home: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 120):
    """`bentoml serve <target>` from `cwd` on a free port until the block ends (an empty model store unless
    `home` is given); yields the ready Server, raises ServerFailed if it never gets ready."""
    home = home or tempfile.mkdtemp(prefix="bentoml-home-reliability-")
    port = free_port()
    full_env = {**os.environ, "BENTOML_HOME": home, "BENTOML_DO_NOT_TRACK": "true", **(env or {})}
    log = open(Path(home) / f"serve-{port}.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1", "--port", str(port)],
        cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + timeout
        while not server.ready(timeout=2):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServerFailed(f"bentoml serve {target} did not become ready:\n{server.log()[-4000:]}")
            time.sleep(0.5)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
