"""What several canaries of tests/upstream share: BentoML's worker entry point driven up to the point where it hands its socket to uvicorn."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import attr
import pytest


@dataclass
class WorkerRun:
    """What BentoML's worker did with uvicorn: the Server objects it made (config each) and what it ran them with."""

    app: Callable
    configs: list[Any] = field(default_factory=list)
    runs: list[tuple[tuple, dict]] = field(default_factory=list)  # (args, kwargs) of each Server.run call


@pytest.fixture
def bentoml_worker(monkeypatch) -> Iterator[Callable[..., WorkerRun]]:
    """Run BentoML's worker command (``python -m _bentoml_impl.worker.service``, a click command) on a socket, with a
    stand-in service and a ``uvicorn.Server`` that records how it is made and run instead of serving.

    Only what the worker reaches is replaced: the loader (a fake service), BentoML's logging set-up (left as pytest
    has it) and ``uvicorn.Server``, which the worker looks up as an attribute of ``uvicorn`` when it starts serving,
    as the patch does. The global state the worker sets (server context, development mode) is restored."""
    import uvicorn
    from _bentoml_impl import loader
    from _bentoml_impl.worker import service as worker
    from bentoml._internal import log
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.context import server_context

    async def app(scope, receive, send):
        raise AssertionError("the recording server serves nothing")

    class Service:
        name, path_prefix, apis, bento = "canary", "", {}, None

        def to_asgi(self, is_main: bool = True) -> Callable:
            return app

    run = WorkerRun(app)

    class Recording:
        def __init__(self, config: Any):
            run.configs.append(config)

        def run(self, *args: Any, **kwargs: Any) -> None:
            run.runs.append((args, kwargs))

    monkeypatch.setattr(loader, "load", lambda *args, **kwargs: Service())
    monkeypatch.setattr(log, "configure_server_logging", lambda *args, **kwargs: None)
    monkeypatch.setattr(uvicorn, "Server", Recording)
    monkeypatch.delenv("BENTOML_RUNNER_MAP", raising=False)
    fields = [f.name for f in attr.fields(type(server_context))]  # an attrs class with slots
    context = {name: getattr(server_context, name) for name in fields}
    development = BentoMLContainer.development_mode.get()

    def start(sock: socket.socket, *options: str) -> WorkerRun:
        """The worker started as circus starts it: `--fd` a duplicate of `sock`'s descriptor (the worker owns it)."""
        worker.main.main(["--fd", str(socket.dup(sock.fileno())), *options], standalone_mode=False)
        return run

    yield start
    for name, value in context.items():
        setattr(server_context, name, value)
    BentoMLContainer.development_mode.set(development)
    for args, kwargs in run.runs:
        for sock in [*args, *kwargs.values()]:
            for s in sock if isinstance(sock, list) else []:
                s.close()
