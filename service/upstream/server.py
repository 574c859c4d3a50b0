"""uvicorn's server and HTTP protocol in each BentoML worker, patched: the worker listens on a socket of its own (SO_REUSEPORT), and SIGTERM starts a drain (service/lifecycle.py) instead of uvicorn's immediate shutdown.

Why, with the versions pinned (service/upstream/__init__.py):

* **Own listener.** BentoML's supervisor binds one socket and every worker accepts from it: a connection
  goes to whichever worker's event loop wins ``accept()``, and asyncio accepts a whole burst per wake-up, so
  one worker can take every keep-alive connection of a round (BentoML issue #5426; PR #5557, a socket per
  worker, closed unmerged). The supervisor's socket now only reserves the port (bound with SO_REUSEPORT, never
  listening: service/upstream/arbiter.py); ``Server.startup`` binds this worker's own socket to the same
  address, and Linux spreads new connections over the workers' sockets by a hash of their addresses. A socket
  inherited that listens already (the arbiter patch left out) is used as before.
* **Drain.** uvicorn's graceful shutdown closes its listener and every idle keep-alive connection at once, so
  a request a client is writing on such a connection is lost, and connections already queued on the
  listener are reset. Here the first SIGTERM begins the drain: the worker keeps accepting and answering for
  ``Drain.seconds``, not ready, and answers with ``Connection: close`` (``Protocol``); then it accepts what is
  queued on its listener, closes it, and closes each idle connection only after ``LINGER_S`` without a request
  (a request already on its way is answered). A second SIGTERM, or SIGINT, stops at once.
* **Servers beside HTTP** (the gRPC one): started once the worker serves HTTP, on the same host, and stopped when
  it stops accepting (``Beside``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from types import FrameType
from typing import Any, Protocol as Interface

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.lifecycle import Drain

UPSTREAM_SERVER = uvicorn.Server
TICK_S = 0.1  # uvicorn's main loop calls on_tick this often
LINGER_S = 0.1  # an idle connection at shutdown is closed after this long without a request (a LAN's RTTs, many times)
log = logging.getLogger("bentoml.service.thermodigits")


def reserved(sock: socket.socket) -> bool:
    """A TCP socket bound with SO_REUSEPORT that does not listen: the port the supervisor reserved for the workers."""
    return (sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM
            and hasattr(socket, "SO_REUSEPORT") and sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
            and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0)


def own_listener(inherited: socket.socket, backlog: int) -> socket.socket:
    """A listening socket of this worker's on `inherited`'s address (SO_REUSEPORT); `inherited` itself listening if that fails."""
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when their proto says TCP (with Nagle's
    # algorithm and delayed ACKs, small answers waited 40 ms).
    sock = socket.socket(inherited.family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if inherited.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY,
                            inherited.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
        sock.bind(inherited.getsockname())
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        log.warning("no listening socket of this worker's own (%s): accepting from the shared one", e)
        inherited.listen(backlog)
        return inherited
    sock.setblocking(False)
    inherited.close()  # the supervisor keeps its own copy, and the reservation with it
    return sock


class Beside(Interface):
    """A server a worker runs beside its HTTP one."""

    async def start(self, host: str) -> None:
        """Serve on `host` (the HTTP listener's); raise if it cannot."""

    async def stop(self, forced: bool) -> None:
        """Stop accepting and answer what was accepted (`forced`: answer nothing more)."""


class Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, draining: keep-alive off from SIGTERM on, idle connections closed after a linger."""

    drain: Drain | None = None  # set by install(); None: uvicorn's behaviour
    head_open = False  # a request's line and headers are being received

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.drain is not None and self.drain.closing:  # accepted as the listener closed
            self.shutdown()

    def on_message_begin(self) -> None:
        self.head_open = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self.head_open = False
        super().on_headers_complete()

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if self.drain is not None and self.drain.draining:
            cycle.keep_alive = False  # uvicorn answers with Connection: close and closes after the answer
        super()._start_asgi_task(cycle, app)

    def idle(self) -> bool:
        """No request on this connection: none begun, or the last one answered."""
        return (self.cycle is None or self.cycle.response_complete) and not self.head_open

    def shutdown(self) -> None:
        if self.drain is None or self.drain.forced or not self.idle():
            return super().shutdown()  # a request in progress is answered, then the connection closed
        self.loop.call_later(LINGER_S, self._close_if_idle, 2)

    def _close_if_idle(self, tries: int) -> None:
        if self.transport.is_closing() or not (self.cycle is None or self.cycle.response_complete):
            return  # closed, or a request arrived: keep-alive is off, so its answer closes the connection
        if self.head_open and tries > 1:  # half a request's head: once more
            self.loop.call_later(LINGER_S, self._close_if_idle, tries - 1)
            return
        self.transport.close()


class Server(UPSTREAM_SERVER):  # type: ignore[misc, valid-type]
    """uvicorn's server with a listener of the worker's own and a drain on SIGTERM."""

    drain: Drain | None = None  # set by install(); None: uvicorn's shutdown
    beside: tuple[Beside, ...] = ()  # set by install()
    announced = False
    listeners: list[socket.socket] = []

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if sockets:
            sockets = [own_listener(s, self.config.backlog) if reserved(s) else s for s in sockets]
        self.listeners = list(sockets or [])
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            host = self.listeners[0].getsockname()[0] if self.listeners else self.config.host
            for other in self.beside:
                await other.start(host)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        drain = self.drain
        if drain is not None and sig == signal.SIGTERM and not self.should_exit and drain.begin():
            self._captured_signals.append(sig)  # uvicorn raises it again once stopped
            return  # on_tick announces it and ends the drain
        if drain is not None:
            drain.force()
            self.force_exit = True
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        drain = self.drain
        if drain is not None and drain.draining and not self.announced:
            self.announced = True
            log.info("SIGTERM: draining for %g s (not ready; answering, with Connection: close), then stopping",
                     drain.seconds)
        if drain is not None and drain.draining:
            remaining = drain.remaining()
            if remaining < TICK_S:  # uvicorn ticks every 0.1 s: stop on time, not up to a tick late
                await asyncio.sleep(max(remaining, 0.0))
                return True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        stopping = [asyncio.ensure_future(other.stop(self.force_exit)) for other in self.beside]  # run once we await
        if self.drain is not None:
            if self.force_exit:
                self.drain.force()
            else:
                self.drain.close()
                self.accept_queued()
                for served in self.servers:  # at once: a connection queued after the last accept would be reset
                    served.close()
        await super().shutdown(sockets=sockets)  # closing them again does nothing
        await asyncio.gather(*stopping)

    def accept_queued(self) -> None:
        """Accept every connection queued on the listeners (closing them would reset those); close them right after,
        with no await or logging between (a connection queued in that gap is reset)."""
        loop = asyncio.get_running_loop()
        for sock in self.listeners:
            while True:
                try:
                    conn, _ = sock.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # closed, or not a listener
                    break
                conn.setblocking(False)
                loop.create_task(loop.connect_accepted_socket(self.protocol, conn, ssl=self.config.ssl))

    def protocol(self) -> asyncio.Protocol:
        """What uvicorn's startup makes for each connection."""
        return self.config.http_protocol_class(config=self.config, server_state=self.server_state,
                                               app_state=self.lifespan.state)


def install(drain: Drain | None, beside: tuple[Beside, ...] = ()) -> None:
    """Idempotent: BentoML's worker runs this Server (its own listener when the port is reserved; `drain` on SIGTERM,
    None: uvicorn's shutdown; the servers `beside` it); call before the worker starts uvicorn."""
    Server.drain = Protocol.drain = drain
    Server.beside = tuple(beside)
    uvicorn.Server = Server  # BentoML's worker calls uvicorn.Server(config).run(sockets=[...])
