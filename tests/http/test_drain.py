"""SIGTERM on a real `bentoml serve` under load: every request that reached it answered and exit 0 inside the
grace period Kubernetes gives the pod, with one worker and with the default; during the drain not ready, alive and
answering; a second SIGTERM or a SIGINT stops at once; a port another server listens on stops the start.

How long the drain takes to exit is a figure of `python -m harness.drain`, not a bound asserted here."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from harness.drain import sigterm_under_load
from service.settings import Settings
from testkit.driver import go
from testkit.manifests import grace_period_s
from testkit.server import free_port, started_service
from testkit.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
DRAIN_S = Settings().drain_s  # the default, as users get it
# A drain no test waits out: a server that stops within STOP_S of a second SIGTERM (or a SIGINT) did not drain, and
# one that is still draining cannot stop answering while a test looks at it, however slow the host.
LONG_DRAIN_S = 600
STOP_S = 60


def started(**kwargs):
    return started_service(home=tempfile.mkdtemp(prefix="bentoml-home-drain-"), **kwargs)


def exited_within(server, seconds: float) -> int | None:
    try:
        return server.proc.wait(seconds)
    except subprocess.TimeoutExpired:
        return None


@pytest.mark.parametrize("workers", [1, None], ids=["one-worker", "default-workers"])
def test_sigterm_under_32_clients_loses_nothing_and_exits_0_inside_the_grace_period(workers, record_property):
    grace_s = grace_period_s()
    server = started(workers=workers)
    try:
        run = go(sigterm_under_load(server, "digit", clients=32, after=1.5, drain_s=DRAIN_S))
    finally:
        if server.proc.poll() is None:
            server.stop()
    record_property("figures", run)  # exited_after_s among them: harness.drain reports it over many runs
    failed = {**run, "grace_period_s": grace_s, "log": server.log()[-3000:]}
    assert run["answered_after_signal"] > 0 and run["refused_connections"] > 0, run  # served on, then stopped accepting
    assert run["lost"] == 0 and run["non_2xx"] == 0, failed
    assert run["refused_before_drain_end"] == 0, failed  # accepted throughout its drain
    assert run["exit_status"] == 0 and run["exited_after_s"] < grace_s, failed  # before Kubernetes would kill it


def test_during_the_drain_readiness_fails_liveness_holds_and_a_second_sigterm_stops_at_once():
    server = started(workers=1, env={"SERVICE_DRAIN_S": str(LONG_DRAIN_S)})
    try:
        os.kill(server.proc.pid, signal.SIGTERM)
        wait_until(lambda: httpx.get(f"{server.url}/readyz", timeout=30).status_code == 503,
                   message="/readyz to answer 503 after SIGTERM")
        assert httpx.get(f"{server.url}/v2/health/ready", timeout=30).status_code == 503
        assert httpx.get(f"{server.url}/livez", timeout=30).status_code == 200
        answer = httpx.post(f"{server.url}/temperature", json={"readings": [35.7]}, timeout=30)
        assert answer.status_code == 200 and answer.headers["connection"] == "close"
        os.kill(server.proc.pid, signal.SIGTERM)
        assert exited_within(server, STOP_S) is not None, server.log()[-3000:]  # not after its 600-s drain
    finally:
        if server.proc.poll() is None:
            server.stop()
    assert not server.workers()


def test_sigint_stops_at_once():
    server = started(workers=1, env={"SERVICE_DRAIN_S": str(LONG_DRAIN_S)})
    try:
        os.kill(server.proc.pid, signal.SIGINT)
        assert exited_within(server, STOP_S) is not None, server.log()[-3000:]  # not after its 600-s drain
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
