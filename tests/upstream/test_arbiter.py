"""service/upstream/arbiter.py: the supervisor's API socket reserves its port without listening (and refuses a port another server listens on); a second SIGTERM or a SIGINT kills the workers at once; and what it relies on in BentoML and circus."""

from __future__ import annotations

import errno
import signal
import socket
import subprocess
import sys

import circus.controller
import pytest
from _bentoml_impl.server import serving
from circus.sighandler import SysHandler
from circus.sockets import CircusSocket, CircusSockets

from service.upstream import arbiter
from testkit.wait import wait_until


@pytest.fixture
def reserving(monkeypatch):
    monkeypatch.setattr(CircusSocket, "bind", CircusSocket.bind)
    monkeypatch.setattr(CircusSocket, "listen", CircusSocket.listen)
    arbiter.reserve_port()


# ---------------------------------------------------------------------------------------------- upstream, as relied on
# Each canary runs BentoML's or circus's code without the patch; its docstring says what a failure means.


class Started(Exception):
    """Raised in place of making circus's arbiter: serve_http has made every socket and watcher by then."""


def test_bentoml_hands_every_worker_the_api_server_s_circus_socket(monkeypatch, tmp_path):
    """reserve_port changes the CircusSocket named API_SERVER_NAME (TCP): the one serve_http makes for its host and
    port and hands to every worker (``--fd $(circus.sockets.<name>)``, each worker's listener of its own then joins its
    address), and that circus binds in ``bind_and_listen_all`` (it skips sockets made with so_reuseport).

    If this fails, BentoML makes the API server's socket otherwise: reserves() no longer finds it (the workers would
    share one listener again, or find none), so follow it before trusting the reuseport patch; delete the patch if
    BentoML gives each worker a socket of its own (PR #5557)."""
    import bentoml
    import bentoml.serving
    from _bentoml_impl import loader
    from _bentoml_impl.server.allocator import ResourceAllocator
    from bentoml._internal.utils import circus as bentoml_circus

    @bentoml.service
    class Canary:
        @bentoml.api
        def echo(self, text: str) -> str:
            return text

    made = {}

    def arbiter_(watchers, **kwargs):
        made.update(kwargs, watchers=watchers)
        raise Started

    monkeypatch.setattr(loader, "load", lambda *args, **kwargs: Canary)
    monkeypatch.setattr(ResourceAllocator, "get_worker_env", lambda self, svc, *args, **kwargs: (2, {}))  # no config
    monkeypatch.setattr(bentoml.serving, "ensure_prometheus_dir", lambda *args, **kwargs: str(tmp_path))
    monkeypatch.setattr(bentoml_circus, "create_standalone_arbiter", arbiter_)
    with pytest.raises(Started):
        serving.serve_http("canary:Canary", host="127.0.0.1", port=3999, backlog=77)
    try:
        (api,) = [s for s in made["sockets"] if s.name == serving.API_SERVER_NAME]
        assert isinstance(api, CircusSocket) and arbiter.reserves(api)
        assert (api.host, api.port, api.backlog, api.family, api.so_reuseport) == ("127.0.0.1", 3999, 77,
                                                                                  socket.AF_INET, False)
        (service,) = made["watchers"]
        assert service.numprocesses == 2
        fd = service.args.index("--fd")
        assert service.args[fd + 1] == f"$(circus.sockets.{serving.API_SERVER_NAME})"
    finally:
        for sock in made.get("sockets", []):
            sock.close()


def test_circus_binds_and_listens_through_the_socket_s_own_methods(monkeypatch):
    """reserve_port replaces ``CircusSocket.bind`` and ``CircusSocket.listen``: circus must bind the API server's
    socket (in the arbiter's ``bind_and_listen_all``) by calling them on the socket.

    If this fails, circus binds another way (socket.socket's methods, or a socket it makes itself): the API server's
    socket would listen and the workers share it; hook where circus binds now."""
    calls = []
    monkeypatch.setattr(CircusSocket, "bind", lambda self, address: calls.append(("bind", address)))
    monkeypatch.setattr(CircusSocket, "listen", lambda self, *args: calls.append(("listen", *args)))
    sock = CircusSocket(name=serving.API_SERVER_NAME, host="127.0.0.1", port=3999, backlog=77)
    try:
        CircusSockets([sock]).bind_and_listen_all()
    finally:
        sock.close()
    assert calls == [("bind", ("127.0.0.1", 3999)), ("listen", 77)]


def test_circus_s_controller_makes_its_signal_handler_from_the_controller_module_s_name(monkeypatch):
    """signals() replaces ``circus.controller.SysHandler``: the controller must make its handler from that name when
    the arbiter makes the controller.

    If this fails, circus makes its signal handler another way: a second SIGTERM would be ignored again; hook where
    it is made now."""
    made = []

    class Recording:
        def __init__(self, controller):
            made.append(controller)

    monkeypatch.setattr(circus.controller, "SysHandler", Recording)
    controller = circus.controller.Controller("tcp://127.0.0.1:0", None, None, None, arbiter=object())
    assert made == [controller] and isinstance(controller.sys_hdl, Recording)


def test_circus_stops_gracefully_on_every_sigterm_and_sigint():
    """What Signals works around: circus's handler dispatches SIGTERM and SIGINT to ``handle_term``/``handle_int``,
    and both only ask for a graceful stop (``quit``), however often they come: BentoML gives its workers a day.

    If this fails, circus stops at once on a second signal (or on SIGINT) itself: delete Signals and signals()."""
    quits, handled = [], []

    class Upstream(arbiter.UPSTREAM_SIGNALS):
        def quit(self):
            quits.append(True)

    handler = Upstream.__new__(Upstream)  # without registering process-wide signal handlers
    for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGINT):
        handler.signal(sig)
    assert len(quits) == 3

    class Dispatching(arbiter.UPSTREAM_SIGNALS):
        def handle_term(self):
            handled.append("term")

        def handle_int(self):
            handled.append("int")

    dispatching = Dispatching.__new__(Dispatching)
    dispatching.signal(signal.SIGTERM)
    dispatching.signal(signal.SIGINT)
    assert handled == ["term", "int"]


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
    import psutil

    wait_until(lambda: all(psutil.Process(p.pid).children() for p in procs),  # each has started its child
               message="the stand-in workers to start their children")
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
