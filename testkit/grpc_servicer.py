"""service/v2/grpc_service.py's server started in this process for tests, on an asyncio event loop in a thread of its own (``EventLoop``, ``running``), with what it observed recorded; ``committed_plane`` is a data plane serving the committed default versions, loaded from models/ without a model store."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any, Awaitable, Iterator

import artifacts
import artifacts.serving
from service.core.admission import Admission
from service.core.auth import Access
from service.core.plane import DataPlane
from service.core.routing import Route
from service.inference import versions
from service.lifecycle import Drain
from service.settings import Settings
from service.v2 import grpc_service


def committed_plane(settings: Settings | None = None, **kwargs: Any) -> DataPlane:
    """A DataPlane (made with `kwargs`) serving each model's default version of models/serving.json, from models/."""
    settings = settings or Settings()
    plane = DataPlane(**kwargs)
    routes = {}
    for name, entry in artifacts.serving.read().models.items():
        version = versions.load(artifacts.model(name), artifacts.version_dir(name, entry.default), settings, "cpu")
        routes[name] = Route(name, version, {version.version: version})
    plane.routes = routes
    return plane


class EventLoop:
    """An asyncio event loop running in a daemon thread: ``run(coroutine)`` waits for its result from any thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="grpc-servicer-loop", daemon=True)
        self.thread.start()

    def run(self, coroutine: Awaitable, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class Running:
    """A started server: where it listens, what it was given, and every (method, code, seconds, peer) observe() saw."""

    port: int
    admission: Admission
    drain: Drain
    settings: Settings
    observed: list[tuple[str, Any, float]] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def admission_for(settings: Settings) -> Admission:
    """An Admission as service/service.py makes a worker's."""
    return Admission(settings.queue_target_s, settings.concurrency, settings.max_requests, settings.max_inflight_bytes,
                     floor=settings.queue_floor)


@contextlib.contextmanager
def running(loop: EventLoop, plane: DataPlane, settings: Settings | None = None, admission: Admission | None = None,
            access: Access | None = None, drain: Drain | None = None, deadline_s: float = 30.0, port: int = 0,
            repository: Any = None) -> Iterator[Running]:
    """The server on `port` of 127.0.0.1 (0: a free one) until the block ends (then stopped with no grace)."""
    settings = settings or Settings()
    state = Running(0, admission or admission_for(settings), drain or Drain(settings.drain_s), settings)
    core = grpc_service.Core(plane, state.admission, access or Access(None), state.drain, deadline_s,
                             lambda *seen: state.observed.append(seen), repository)
    server = loop.run(grpc_service.start(core, "127.0.0.1", port, settings.max_body_bytes))
    state.port = server.port
    try:
        yield state
    finally:
        loop.run(server.stop(0))
