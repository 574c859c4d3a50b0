"""service/upstream/server.py: each worker's own SO_REUSEPORT listener and the drain on SIGTERM, on a real uvicorn server in a thread; and what they rely on upstream."""

from __future__ import annotations

import asyncio
import itertools
import selectors
import signal
import socket
import threading
import time

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from service.lifecycle import Drain
from service.upstream import server as patch
from service.upstream.server import Protocol, Server, own_listener, reserved
from testkit.wait import wait_until


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
        wait_until(lambda: self.server.started, message="the server to start")

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
# Each canary runs BentoML's, uvicorn's or asyncio's code without the patch; its docstring says what a failure means.


def test_bentoml_s_worker_runs_uvicorn_server_on_the_supervisor_s_socket(bentoml_worker):
    """install() replaces ``uvicorn.Server``, the name BentoML's worker looks up when it starts serving, and
    Server.startup recognises the supervisor's reservation among the sockets ``run`` is given, as it was passed.

    If this fails, BentoML's worker no longer runs ``uvicorn.Server(config).run(sockets=[the --fd socket])``: find
    how it starts uvicorn now before trusting the reuseport and drain patches, or delete them if BentoML gives each
    worker a listener of its own (PR #5557) and drains on SIGTERM."""
    held = reserve()
    try:
        run = bentoml_worker(held, "--backlog", "77")
        (config,), ((args, kwargs),) = run.configs, run.runs  # one Server made, run once
        assert config.app is run.app and config.backlog == 77  # own_listener listens with the worker's backlog
        sockets = kwargs["sockets"] if "sockets" in kwargs else args[0]
        assert len(sockets) == 1 and sockets[0].getsockname() == held.getsockname()
        assert reserved(sockets[0])  # handed on as the supervisor made it: not made to listen
    finally:
        held.close()


class Hooked(patch.UPSTREAM_SERVER):
    """uvicorn's server with the hooks server.Server overrides, in its signatures, recording their calls; SIGTERM
    handled as the drain handles it: recorded in ``_captured_signals`` and the main loop ended by ``on_tick``."""

    def __init__(self, config):
        super().__init__(config)
        self.calls, self.stopping = [], False

    async def startup(self, sockets=None):
        self.calls.append(("startup", sockets))
        await super().startup(sockets=sockets)

    async def on_tick(self, counter):
        self.calls.append(("on_tick", counter))
        if counter == 2:
            signal.raise_signal(signal.SIGTERM)  # as `kill` would: to the handler uvicorn installed
        return self.stopping or counter >= 50 or await super().on_tick(counter)  # 50: the signal never came

    def handle_exit(self, sig, frame):
        self.calls.append(("handle_exit", sig))
        self._captured_signals.append(sig)
        self.stopping = True

    async def shutdown(self, sockets=None):
        self.calls.append(("shutdown", sockets))
        await super().shutdown(sockets=sockets)


def test_uvicorn_calls_the_hooks_the_patch_overrides_and_raises_a_captured_signal_again_once_stopped():
    """Server overrides startup(sockets), on_tick(counter), handle_exit(sig, frame) and shutdown(sockets); on the
    first SIGTERM its handle_exit only appends the signal to ``_captured_signals`` (so that the process still ends by
    SIGTERM, as circus expects, once stopped) and its on_tick ends the main loop when the drain is over.

    If this fails, uvicorn changed when or how it calls these hooks, or stopped raising captured signals again after
    restoring the handlers it found: adapt server.Server (and its tests) before trusting the drain. The drain's hooks
    can go once uvicorn drains on SIGTERM itself (keeps accepting for a period, keep-alive off, then stops)."""
    listener = socket.create_server(("127.0.0.1", 0))
    server = Hooked(uvicorn.Config(app, lifespan="off", log_config=None, loop="asyncio", http="httptools"))
    received = []
    previous = signal.signal(signal.SIGTERM, lambda sig, frame: received.append(sig))  # must run in the main thread
    try:
        server.run(sockets=[listener])
        assert signal.getsignal(signal.SIGTERM) is not server.handle_exit  # uvicorn put ours back ...
        assert received == [signal.SIGTERM]  # ... and raised the captured signal to it
    finally:
        signal.signal(signal.SIGTERM, previous)
        listener.close()
    assert server.calls == [("startup", [listener]), ("on_tick", 0), ("on_tick", 1), ("on_tick", 2),
                            ("handle_exit", signal.SIGTERM), ("shutdown", [listener])]


class FakeClockSelector(selectors.DefaultSelector):
    """A selector that, when nothing is ready, lets the time it would have waited pass at once on its clock."""

    now = 0.0

    def select(self, timeout=None):
        ready = super().select(0)
        if not ready:
            assert timeout is not None, "the loop would wait forever"
            self.now += max(timeout, 0.0)
        return ready


class FakeClockLoop(asyncio.SelectorEventLoop):
    """asyncio's loop on FakeClockSelector's clock: timers fire in order, and no test waits for them."""

    def __init__(self):
        self.selector = FakeClockSelector()
        super().__init__(self.selector)

    def time(self):
        return self.selector.now


def test_uvicorn_s_main_loop_calls_on_tick_every_tenth_of_a_second():
    """Server.on_tick ends the drain on time: when less than TICK_S of it remains, it sleeps the rest and returns True
    instead of waiting for the next tick.

    If this fails, uvicorn ticks at another rate or stops ticking: set TICK_S to it, or end the drain another way (a
    timer of its own). on_tick's early stop can go once uvicorn ends a drain on time itself."""
    ticks = []

    class Ticking(patch.UPSTREAM_SERVER):
        async def on_tick(self, counter):
            ticks.append((counter, asyncio.get_running_loop().time()))
            return len(ticks) == 30

    loop = FakeClockLoop()
    try:
        loop.run_until_complete(Ticking(uvicorn.Config(app)).main_loop())
    finally:
        loop.close()
    assert [counter for counter, _ in ticks] == list(range(30))
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(ticks)]
    assert all(gap == pytest.approx(patch.TICK_S, abs=1e-6) for gap in gaps), gaps


class Upstream:
    """uvicorn's Server (a subclass of it, unpatched) on a listening socket, in a thread with its own event loop."""

    def __init__(self, cls: type):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.server = cls(uvicorn.Config(app, lifespan="off", log_config=None, loop="asyncio", http="httptools"))
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), message="the server to start")
        assert self.server.started, self.errors

    def run(self):
        try:
            self.server.run(sockets=[self.listener])
        except BaseException as e:  # noqa: BLE001 - reported by stop()
            self.errors.append(e)

    def stop(self) -> None:
        """uvicorn's own stop (handle_exit without a drain sets should_exit); waits for it, re-raising its errors."""
        self.server.should_exit = True
        self.thread.join(10)
        assert not self.thread.is_alive() and not self.errors, self.errors


@pytest.mark.parametrize("closed_first", [False, True], ids=["uvicorn-alone", "closed-first-as-patched"])
def test_uvicorn_s_shutdown_closes_its_listeners_and_closing_them_first_is_harmless(closed_first):
    """Server.shutdown closes the listeners itself right after accepting what is queued on them, then calls uvicorn's
    shutdown, which closes them again and the sockets it was given.

    If this fails, closing an asyncio server twice raises, or uvicorn's shutdown leaves a listener open: Server.shutdown
    must close each exactly once, or close them all itself. (Nothing to delete: this is what the drain relies on.)"""

    class Closing(patch.UPSTREAM_SERVER):
        async def shutdown(self, sockets=None):
            if closed_first:
                for served in self.servers:
                    served.close()
            await super().shutdown(sockets=sockets)

    running = Upstream(Closing)
    try:
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as conn:
            assert ask(conn)[0] == 200
    finally:
        running.stop()
    assert running.listener.fileno() == -1 and not any(s.is_serving() for s in running.server.servers)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", running.port), timeout=2)


def test_uvicorn_s_shutdown_resets_connections_queued_on_its_listeners():
    """What Server.accept_queued works around: a connection the kernel accepted that uvicorn's loop has not yet taken
    is reset when uvicorn closes the listener, its request never answered (every drain ended with such losses).

    If this fails (the queued request is answered), uvicorn accepts what is queued before it closes its listeners:
    delete accept_queued and let uvicorn's shutdown close them."""
    queued = []

    class Queueing(patch.UPSTREAM_SERVER):
        async def shutdown(self, sockets=None):
            conn = socket.create_connection(sockets[0].getsockname(), timeout=5)  # no loop turn from here on
            conn.sendall(b"GET /queued HTTP/1.1\r\nHost: x\r\n\r\n")
            queued.append(conn)
            await super().shutdown(sockets=sockets)

    Upstream(Queueing).stop()
    (conn,) = queued
    with conn:
        conn.settimeout(5)
        try:
            answer = conn.recv(4096)
        except ConnectionResetError:
            answer = b""
    assert answer == b""


class Transport:
    """What uvicorn's protocol uses of an asyncio transport; keeps what was written."""

    def __init__(self):
        self.written, self.closed = b"", False

    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 3000), "peername": ("127.0.0.1", 5555)}.get(name, default)

    def write(self, data):
        self.written += data

    def close(self):
        self.closed = True

    def is_closing(self):
        return self.closed

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


def test_uvicorn_closes_an_idle_connection_at_once_on_shutdown_and_answers_a_request_in_progress():
    """What the linger replaces: upstream, shutting a connection down closes it at once when no request is in progress
    (one answered, or none begun), so a request a client is writing on it meets a closed connection. Protocol.shutdown
    hands a connection with a request in progress to uvicorn's, which answers it with Connection: close and closes.

    If this fails, uvicorn no longer closes idle connections at once on shutdown (delete the linger:
    Protocol.shutdown's call_later and _close_if_idle), or it no longer answers a request in progress (answer it in
    Protocol.shutdown before trusting the drain)."""

    async def connection():
        config = uvicorn.Config(app, http=HttpToolsProtocol, lifespan="off", log_config=None)
        config.load()
        protocol = HttpToolsProtocol(config=config, server_state=ServerState(), app_state={},
                                     _loop=asyncio.get_running_loop())
        transport = Transport()
        protocol.connection_made(transport)
        return protocol, transport

    async def answered(protocol):
        deadline = asyncio.get_running_loop().time() + 5
        while protocol.tasks:
            assert asyncio.get_running_loop().time() < deadline, "the request was not answered"
            await asyncio.wait(list(protocol.tasks), timeout=5)
            await asyncio.sleep(0)

    async def run():
        results = {}
        protocol, transport = await connection()  # no request yet
        protocol.shutdown()
        results["none begun"] = transport.closed
        protocol, transport = await connection()
        protocol.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        await answered(protocol)
        protocol.shutdown()  # kept alive after its answer
        results["answered"] = transport.closed
        protocol, transport = await connection()
        protocol.data_received(b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")  # half its body
        protocol.shutdown()
        results["in progress"] = transport.closed
        protocol.data_received(b"cd")
        await answered(protocol)
        results["then"] = transport.closed, transport.written
        return results

    results = asyncio.run(run())
    assert results["none begun"] and results["answered"] and not results["in progress"]
    closed, written = results["then"]
    assert closed and written.startswith(b"HTTP/1.1 200 ") and b"connection: close\r\n" in written.lower()


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
        # the server is shutting down: its listener closed, idle connections lingering
        wait_until(lambda: drain.closing, every_s=0.002, message="the drain to end")
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
