"""SIGTERM on a real `bentoml serve` under load: not ready at once, every request that reached it answered, exit 0 within
its drain plus a second, with one worker and with the default; a second SIGTERM or a SIGINT stops at once; a port another
server listens on stops the start."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from harness.drain import EXIT_MARGIN_S, passed, sigterm_under_load
from service.settings import Settings
from testkit.driver import go
from testkit.server import free_port, started_service

REPO = Path(__file__).resolve().parents[2]
DRAIN_S = Settings().drain_s  # the default, as users get it


def started(**kwargs):
    return started_service(home=tempfile.mkdtemp(prefix="bentoml-home-drain-"), **kwargs)


def exited_within(server, seconds: float) -> int | None:
    try:
        return server.proc.wait(seconds)
    except subprocess.TimeoutExpired:
        return None


@pytest.mark.parametrize("workers", [1, None], ids=["one-worker", "default-workers"])
def test_sigterm_under_32_clients_loses_nothing_and_exits_0_within_the_drain(workers, record_property):
    server = started(workers=workers)
    try:
        run = go(sigterm_under_load(server, "digit", clients=32, after=1.5, drain_s=DRAIN_S))
    finally:
        if server.proc.poll() is None:
            server.stop()
    record_property("figures", run)
    assert run["answered_after_signal"] > 0 and run["refused_connections"] > 0, run  # served on, then stopped accepting
    assert passed(run, DRAIN_S), {**run, "log": server.log()[-3000:]}


def test_during_the_drain_readiness_fails_liveness_holds_and_a_second_sigterm_stops_at_once():
    server = started(workers=1)
    try:
        os.kill(server.proc.pid, signal.SIGTERM)
        time.sleep(0.3)
        assert httpx.get(f"{server.url}/readyz", timeout=5).status_code == 503
        assert httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 503
        assert httpx.get(f"{server.url}/livez", timeout=5).status_code == 200
        answer = httpx.post(f"{server.url}/temperature", json={"readings": [35.7]}, timeout=5)
        assert answer.status_code == 200 and answer.headers["connection"] == "close"
        os.kill(server.proc.pid, signal.SIGTERM)
        assert exited_within(server, EXIT_MARGIN_S + 1) is not None, server.log()[-3000:]
    finally:
        if server.proc.poll() is None:
            server.stop()
    assert not server.workers()


def test_sigint_stops_at_once():
    server = started(workers=1)
    try:
        os.kill(server.proc.pid, signal.SIGINT)
        assert exited_within(server, EXIT_MARGIN_S + 1) is not None, server.log()[-3000:]
    finally:
        if server.proc.poll() is None:
            server.stop()


def test_a_port_another_server_listens_on_stops_the_start_with_a_message():
    """Even a listener with SO_REUSEPORT, as another instance's workers have, which the kernel would let us join."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", free_port()))
        other.listen(8)
        port = other.getsockname()[1]
        env = {**os.environ, "BENTOML_HOME": tempfile.mkdtemp(prefix="bentoml-home-port-"), "BENTOML_DO_NOT_TRACK": "true",
               "SERVICE_GRPC_PORT": str(free_port())}
        proc = subprocess.run([sys.executable, "-m", "bentoml", "serve", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode not in (0, None), proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Address already in use" in proc.stdout + proc.stderr, proc.stdout[-2000:] + proc.stderr[-2000:]
