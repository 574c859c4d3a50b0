"""service/upstream/arbiter.py: the supervisor's API socket reserves its port without listening (and refuses a port another server listens on); a second SIGTERM or a SIGINT kills the workers at once; and what it relies on in BentoML and circus."""

from __future__ import annotations

import errno
import inspect
import signal
import socket
import subprocess
import sys
import time

import circus.controller
import pytest
from _bentoml_impl.server import serving
from circus.sighandler import SysHandler
from circus.sockets import CircusSocket

from service.upstream import arbiter


@pytest.fixture
def reserving(monkeypatch):
    monkeypatch.setattr(CircusSocket, "bind", CircusSocket.bind)
    monkeypatch.setattr(CircusSocket, "listen", CircusSocket.listen)
    arbiter.reserve_port()


# ---------------------------------------------------------------------------------------------- upstream, as relied on


def test_bentoml_makes_the_api_server_socket_a_circus_socket_named_api_server_name():
    source = inspect.getsource(serving.serve_http)
    assert "from circus.sockets import CircusSocket" in source
    assert "CircusSocket(\n                name=API_SERVER_NAME," in source
    assert "--fd\",\n            f\"$(circus.sockets.{API_SERVER_NAME})\"" in source  # every worker gets that socket


def test_circus_binds_and_listens_through_the_socket_s_own_methods():
    source = inspect.getsource(CircusSocket.bind_and_listen)
    assert "self.bind((self.host, self.port))" in source and "self.listen(self.backlog)" in source


def test_circus_makes_its_signal_handler_from_the_controller_module_s_name():
    assert "SysHandler(self)" in inspect.getsource(circus.controller.Controller._init_syshandler)
    assert "handle_term" in dir(SysHandler) and "handle_int" in dir(SysHandler) and "quit" in dir(SysHandler)


# ---------------------------------------------------------------------------------------------- the reserved port


def test_the_api_server_socket_is_bound_with_so_reuseport_and_does_not_listen(reserving):
    sock = CircusSocket(name=serving.API_SERVER_NAME, host="127.0.0.1", port=0)
    try:
        sock.bind_and_listen()
        assert sock.getsockname()[1] == sock.port != 0
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
        with pytest.raises(ConnectionRefusedError):  # nobody listens until a worker does
            socket.create_connection(("127.0.0.1", sock.port), timeout=2)
    finally:
        sock.close()


def test_other_circus_sockets_listen_as_before(reserving):
    sock = CircusSocket(name="a-dependency", host="127.0.0.1", port=0)
    try:
        sock.bind_and_listen()
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    finally:
        sock.close()


def test_a_port_another_server_listens_on_stops_the_start(reserving):
    """SO_REUSEPORT would otherwise let a second server share the port silently: the probe refuses it."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # even one that would let us join it
        other.bind(("127.0.0.1", 0))
        other.listen(8)
        sock = CircusSocket(name=serving.API_SERVER_NAME, host="127.0.0.1", port=other.getsockname()[1])
        with pytest.raises(OSError) as e:
            sock.bind_and_listen()
        sock.close()
    assert e.value.errno == errno.EADDRINUSE


def test_a_reserved_port_without_a_listener_is_free_for_the_next_server(reserving):
    """A server that is stopping (its workers gone, its supervisor not yet) or lingering connections do not block."""
    first = CircusSocket(name=serving.API_SERVER_NAME, host="127.0.0.1", port=0)
    first.bind_and_listen()
    second = CircusSocket(name=serving.API_SERVER_NAME, host="127.0.0.1", port=first.port)
    try:
        second.bind_and_listen()
    finally:
        first.close()
        second.close()


# ---------------------------------------------------------------------------------------------- signals


class Process:
    def __init__(self, pid: int):
        self.pid = pid


class Watcher:
    def __init__(self, pids: list[int]):
        self.processes = {pid: Process(pid) for pid in pids}
        self.respawn, self.stop_signal, self.graceful_timeout = True, signal.SIGTERM, 86400


class Arbiter:
    def __init__(self, watchers):
        self.watchers, self._stopping = watchers, False

    def iter_watchers(self):
        return iter(self.watchers)


class Controller:
    def __init__(self, arbiter_):
        self.arbiter, self.quits = arbiter_, 0


@pytest.fixture
def workers():
    """Two processes standing in for workers (each with a child), under a fake arbiter; a Signals handler for it."""
    procs = [subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"])
             for _ in range(2)]
    time.sleep(0.5)
    fake = Arbiter([Watcher([p.pid for p in procs])])
    handler = arbiter.Signals.__new__(arbiter.Signals)  # without circus' registration of process-wide handlers
    handler.controller = Controller(fake)

    def quit_():
        handler.controller.quits += 1
        fake._stopping = True

    handler.quit = quit_
    yield procs, fake, handler
    for p in procs:
        p.kill()
        p.wait()


def dead(proc: subprocess.Popen, within: float = 5) -> bool:
    try:
        proc.wait(within)
        return True
    except subprocess.TimeoutExpired:
        return False


def test_the_first_sigterm_stops_gracefully_and_a_second_kills_at_once(workers):
    procs, fake, handler = workers
    handler.handle_term()
    assert handler.controller.quits == 1 and all(p.poll() is None for p in procs)  # the workers drain
    handler.handle_term()
    assert all(dead(p) and p.returncode == -signal.SIGKILL for p in procs)
    assert handler.controller.quits == 1 and not fake.watchers[0].respawn


def test_sigint_kills_at_once_and_stops(workers):
    import psutil

    procs, fake, handler = workers
    children = [c for p in procs for c in psutil.Process(p.pid).children(recursive=True)]
    assert len(children) == 2
    handler.handle_int()
    assert all(dead(p) and p.returncode == -signal.SIGKILL for p in procs)
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, alive
    assert handler.controller.quits == 1 and not fake.watchers[0].respawn


def test_signals_install_replaces_the_controller_s_handler(monkeypatch):
    monkeypatch.setattr(circus.controller, "SysHandler", circus.controller.SysHandler)
    arbiter.signals()
    assert circus.controller.SysHandler is arbiter.Signals and issubclass(arbiter.Signals, SysHandler)
