"""service/upstream/server.py: each worker's own SO_REUSEPORT listener and the drain on SIGTERM, on a real uvicorn server in a thread; and what they rely on upstream."""

from __future__ import annotations

import asyncio
import inspect
import signal
import socket
import threading
import time

import pytest
import uvicorn
from _bentoml_impl.worker import service as bentoml_worker
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.lifecycle import Drain
from service.upstream import server as patch
from service.upstream.server import Protocol, Server, own_listener, reserved


def reserve(host: str = "127.0.0.1") -> socket.socket:
    """What the supervisor holds (service/upstream/arbiter.py): bound with SO_REUSEPORT, not listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    return sock


async def app(scope, receive, send):
    """Answers every request with its path, after reading its body."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    body = scope["path"].encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


class Running:
    """A patched uvicorn Server with `drain` on an inherited reserved socket, in a thread with its own event loop."""

    def __init__(self, drain: Drain | None, cls: type = Server, beside: tuple = ()):
        self.reserved = reserve()
        self.port = self.reserved.getsockname()[1]
        config = uvicorn.Config(app, http=type("P", (Protocol,), {"drain": drain}), lifespan="off",
                                log_config=None, loop="asyncio", timeout_keep_alive=30)
        self.server = type("S", (cls,), {"drain": drain, "beside": beside})(config)
        inherited = socket.socket(fileno=socket.dup(self.reserved.fileno()))  # as BentoML's worker gets it
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [inherited]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.server.started

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def close(self):
        self.server.should_exit = self.server.force_exit = True
        self.thread.join(10)
        self.reserved.close()


def ask(conn: socket.socket, path: str = "/x") -> tuple[int, dict[str, str]]:
    """One GET on a keep-alive connection: (status, headers)."""
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError("closed without an answer")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(rest) < int(headers["content-length"]):
        rest += conn.recv(4096)
    return int(lines[0].split()[1]), headers


def closed(conn: socket.socket, within: float = 2.0) -> bool:
    conn.settimeout(within)
    try:
        return conn.recv(1) == b""
    except (ConnectionResetError, socket.timeout):
        return False


# ---------------------------------------------------------------------------------------------- upstream, as relied on


def test_bentoml_s_worker_runs_uvicorn_server_on_the_supervisor_s_socket():
    """The patch replaces uvicorn.Server, which BentoML's worker looks up when it starts serving."""
    source = inspect.getsource(bentoml_worker.main.callback)  # a click command
    assert "uvicorn.Server(config).run(sockets=[socket])" in source and "socket.socket(fileno=fd)" in source


def test_uvicorn_s_server_hooks_are_as_patched():
    for name, params in (("startup", ["self", "sockets"]), ("shutdown", ["self", "sockets"]),
                         ("handle_exit", ["self", "sig", "frame"]), ("on_tick", ["self", "counter"])):
        assert list(inspect.signature(getattr(patch.UPSTREAM_SERVER, name)).parameters) == params, name
    assert "_captured_signals" in inspect.getsource(patch.UPSTREAM_SERVER.__init__)
    assert "signal.raise_signal" in inspect.getsource(patch.UPSTREAM_SERVER.capture_signals)


def test_uvicorn_closes_the_listeners_in_shutdown_and_a_second_close_does_nothing():
    """Server.shutdown closes them itself right after accepting what is queued; uvicorn's close comes after a log call."""
    source = inspect.getsource(patch.UPSTREAM_SERVER.shutdown)
    assert "server.close()" in source and source.index("logger.info") < source.index("server.close()")
    assert "if sockets is None:\n            return" in inspect.getsource(asyncio.base_events.Server.close)


def test_uvicorn_ticks_every_tenth_of_a_second():
    """Server.on_tick ends the drain on time by sleeping the rest of a tick."""
    assert f"await asyncio.sleep({patch.TICK_S})" in inspect.getsource(patch.UPSTREAM_SERVER.main_loop)


def test_uvicorn_closes_an_idle_connection_at_once_on_shutdown():
    """What the linger replaces: upstream, a request a client is writing on an idle connection meets a closed one."""
    closed_now = []

    class T:
        def close(self):
            closed_now.append(True)

    p = HttpToolsProtocol.__new__(HttpToolsProtocol)
    p.cycle, p.transport = None, T()
    HttpToolsProtocol.shutdown(p)
    assert closed_now == [True]


def test_asyncio_sets_tcp_nodelay_only_on_sockets_whose_proto_says_tcp():
    """Why own_listener makes an IPPROTO_TCP socket: with proto 0 answers waited 40 ms for delayed ACKs."""
    from asyncio import base_events

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0) as s:
        base_events._set_nodelay(s)
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as s:
        base_events._set_nodelay(s)
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


# ---------------------------------------------------------------------------------------------- own listeners


def test_a_reserved_socket_is_recognised_and_a_listening_one_is_not():
    sock = reserve()
    assert reserved(sock)
    sock.listen(8)
    assert not reserved(sock)
    sock.close()
    with socket.socket() as plain:
        plain.bind(("127.0.0.1", 0))
        assert not reserved(plain)


def test_own_listeners_share_the_reserved_port_and_the_kernel_spreads_connections_over_them():
    held = reserve()
    listeners = [own_listener(socket.socket(fileno=socket.dup(held.fileno())), 128) for _ in range(2)]
    port = held.getsockname()[1]
    assert all(s.getsockname()[1] == port and s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) for s in listeners)
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(64)]
    accepted = []
    for s in listeners:
        n = 0
        while True:
            try:
                s.accept()[0].close()
                n += 1
            except BlockingIOError:
                break
        accepted.append(n)
    assert sum(accepted) == 64 and min(accepted) >= 10, accepted  # binomial(64, 1/2): below 10 has odds of 1e-7
    for c in clients + listeners + [held]:
        c.close()


def test_the_worker_accepts_with_nodelay_on_its_own_listener_and_answers():
    running = Running(drain=None)
    try:
        with running.connect() as conn:
            assert ask(conn) == (200, ask(conn)[1])
            listening = [s for s in running.server.listeners]
            assert len(listening) == 1 and listening[0].fileno() != running.reserved.fileno()
            assert not reserved(listening[0]) and listening[0].proto == socket.IPPROTO_TCP
    finally:
        running.close()


# ---------------------------------------------------------------------------------------------- the drain


def test_sigterm_drains_then_closes_the_listener_and_answers_what_reached_it():
    drain = Drain(1.0)
    running = Running(drain)
    try:
        idle = running.connect()
        assert ask(idle)[1].get("connection") != "close"  # keep-alive before SIGTERM
        running.server.handle_exit(signal.SIGTERM, None)
        assert drain.draining and not running.server.should_exit
        with running.connect() as during:  # still accepting during the drain ...
            status, headers = ask(during)
            assert status == 200 and headers.get("connection") == "close"  # ... and every answer closes
            assert closed(during)
        status, headers = ask(idle)  # a keep-alive connection idle since before SIGTERM is answered too
        assert status == 200 and headers.get("connection") == "close"
        late = running.connect()  # connected before the drain ends, its request written as the listener closes
        while not drain.closing:  # the server is shutting down: its listener closed, idle connections lingering
            time.sleep(0.002)
        status, headers = ask(late)
        assert status == 200 and headers.get("connection") == "close"
        running.thread.join(5)
        assert not running.thread.is_alive() and drain.closing and not drain.forced
        with pytest.raises(ConnectionRefusedError):
            running.connect()
    finally:
        running.close()


class Beside:
    """A server beside HTTP that records when it was started and stopped."""

    def __init__(self):
        self.calls = []

    async def start(self, host):
        self.calls.append(("start", host))

    async def stop(self, forced):
        await asyncio.sleep(0.05)
        self.calls.append(("stop", forced))


class Recording(Server):
    """Records accepting what is queued, closing the listeners, and the event loop's next turn after the accepting."""

    events: list[str] = []

    async def startup(self, sockets=None):
        await super().startup(sockets)
        for served in self.servers:
            close = served.close
            served.close = lambda close=close: (self.events.append("closed"), close())[-1]

    def accept_queued(self):
        super().accept_queued()
        self.events.append("accepted")
        asyncio.get_running_loop().call_soon(self.events.append, "loop turned")


def test_no_connection_can_queue_between_accepting_the_queued_and_closing_the_listener():
    """A loop turn in between (as when the HTTP shutdown and the servers beside it ran as tasks of one gather) lets
    connections queue on the listener that closing it then resets: requests lost at the end of every drain."""
    beside = Beside()
    running = Running(Drain(0.2), cls=Recording, beside=(beside,))
    try:
        running.server.handle_exit(signal.SIGTERM, None)
        running.thread.join(5)
        assert not running.thread.is_alive()
        assert Recording.events[:2] == ["accepted", "closed"], Recording.events  # closed before the loop turned
        assert beside.calls == [("start", "127.0.0.1"), ("stop", False)]  # started with HTTP, stopped with it
    finally:
        running.close()


def test_an_idle_connection_is_closed_after_the_linger_once_the_listener_is_closed():
    drain = Drain(0.2)
    running = Running(drain)
    try:
        conn = running.connect()
        ask(conn)
        running.server.handle_exit(signal.SIGTERM, None)
        started = time.monotonic()
        assert closed(conn, within=5)
        assert 0.2 + patch.LINGER_S - 0.05 <= time.monotonic() - started < 0.2 + patch.LINGER_S + 1.0
        running.thread.join(5)
        assert not running.thread.is_alive()
    finally:
        running.close()


@pytest.mark.parametrize("signals", [[signal.SIGTERM, signal.SIGTERM], [signal.SIGINT]])
def test_a_second_sigterm_or_a_sigint_stops_at_once(signals):
    drain = Drain(30.0)
    running = Running(drain)
    try:
        conn = running.connect()
        ask(conn)
        started = time.monotonic()
        for sig in signals:
            running.server.handle_exit(sig, None)
        running.thread.join(5)
        assert not running.thread.is_alive() and time.monotonic() - started < 2
        assert drain.forced and running.server.force_exit
        assert closed(conn, within=1)
    finally:
        running.close()


def test_without_a_drain_sigterm_is_uvicorn_s_shutdown():
    running = Running(drain=None)
    try:
        conn = running.connect()
        ask(conn)
        running.server.handle_exit(signal.SIGTERM, None)
        running.thread.join(5)
        assert not running.thread.is_alive() and closed(conn, within=1)
    finally:
        running.close()


def test_install_makes_bentoml_s_worker_use_the_patched_server():
    original = uvicorn.Server
    try:
        drain = Drain(1.0)
        patch.install(drain)
        assert uvicorn.Server is Server and Server.drain is drain and Protocol.drain is drain
    finally:
        uvicorn.Server = original
        Server.drain = Protocol.drain = None
