"""BentoML's supervisor process (circus, in `bentoml serve`), patched: the API server's socket only reserves the port for the workers' own listeners, and a second SIGTERM or a SIGINT stops the workers at once.

* ``reserve_port``: BentoML's ``serve_http`` creates the API server's ``CircusSocket``, binds it, listens, and
  hands the same socket to every worker. Here it binds with SO_REUSEPORT and does not listen:
  the port is held (a second server on it fails at start, see ``refuse_if_served``), and each worker listens on
  a socket of its own bound to the same address (service/upstream/server.py). The workers must run as the
  same user as the supervisor (Linux joins SO_REUSEPORT sockets of one user only), as they always do.
  The other ports the workers serve (gRPC) are reserved the same way when it binds, so a port in use stops the
  start with a message naming its setting.
* ``signals``: circus stops its workers on SIGTERM or SIGINT by sending each SIGTERM and waiting for it to exit
  (BentoML gives it a day); every worker then drains (service/lifecycle.py). A second SIGTERM, or SIGINT, now
  kills the workers at once instead of being ignored while they drain.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from typing import Any

import circus.controller
import psutil
from _bentoml_impl.server.serving import API_SERVER_NAME
from circus.sockets import CircusSocket

UPSTREAM_SIGNALS = circus.controller.SysHandler
_also: dict[int, str] = {}  # other ports the workers serve (the gRPC one): port -> the setting that names it
_held: list[socket.socket] = []  # their reservations, held while the supervisor runs


def refuse_if_served(family: int, address: Any) -> None:
    """Raise OSError (EADDRINUSE) when a socket already listens on `address`: a second server there must not start.

    The probe sets SO_REUSEADDR but not SO_REUSEPORT, so connections lingering in TIME_WAIT and a reserved socket
    that does not listen do not count, and a listener of any process does."""
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)


def reserves(sock: CircusSocket) -> bool:
    """Whether `sock` is the API server's TCP socket, which only reserves the port."""
    return (sock.name == API_SERVER_NAME and not sock.is_unix and sock.socktype == socket.SOCK_STREAM
            and hasattr(socket, "SO_REUSEPORT"))


def reserved_socket(family: int, address: Any) -> socket.socket:
    """A TCP socket bound to `address` with SO_REUSEPORT, not listening (after refuse_if_served)."""
    refuse_if_served(family, address)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def _bind(self: CircusSocket, address: Any) -> None:
    if reserves(self):
        refuse_if_served(self.family, address)
        self.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    socket.socket.bind(self, address)
    if reserves(self):
        for port, setting in _also.items():  # the other ports the workers serve, on the same host
            try:
                _held.append(reserved_socket(self.family, (address[0], port, *address[2:])))
            except OSError as e:
                raise OSError(e.errno, f"{setting}={port}: port {port} on {address[0]}: {e.strerror}") from None


def _listen(self: CircusSocket, *args: Any) -> None:
    if not reserves(self):
        socket.socket.listen(self, *args)


def kill_now(arbiter: Any) -> None:
    """SIGKILL every worker and its children, and keep circus from starting new ones (safe in a signal handler)."""
    for watcher in arbiter.iter_watchers():
        watcher.respawn = False
        watcher.stop_signal, watcher.graceful_timeout = signal.SIGKILL, 0
        for process in list(watcher.processes.values()):
            with contextlib.suppress(psutil.Error, OSError):
                for pid in [p.pid for p in psutil.Process(process.pid).children(recursive=True)] + [process.pid]:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)


class Signals(UPSTREAM_SIGNALS):  # type: ignore[misc, valid-type]
    """circus's signal handler: the first SIGTERM stops the workers gracefully (each drains); a second, or SIGINT, at once."""

    terms = 0

    def handle_term(self) -> None:
        self.terms += 1
        if self.terms == 1:
            return self.quit()
        self.handle_int()

    def handle_int(self) -> None:
        arbiter = self.controller.arbiter
        stopping = getattr(arbiter, "_stopping", False)
        kill_now(arbiter)
        if not stopping:
            self.quit()


def reserve_port(also: dict[int, str] | None = None) -> None:
    """Idempotent: `bentoml serve`'s API server socket reserves its port without listening, and the ports `also` names
    (port -> the setting naming it) on its host, refusing ones something listens on (call before serve_http)."""
    _also.clear()
    _also.update(also or {})
    CircusSocket.bind, CircusSocket.listen = _bind, _listen  # socket.socket's, inherited; circus calls them by name


def signals() -> None:
    """Idempotent: a second SIGTERM, or SIGINT, kills the workers at once (call before the arbiter starts)."""
    circus.controller.SysHandler = Signals  # the controller makes its handler when the arbiter starts

