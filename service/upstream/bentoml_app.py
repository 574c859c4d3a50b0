"""BentoML 1.4.40's middleware stack, patched where it does per-request work this service does not need; each change installs alone (service/upstream/__init__.py).

The thermometer models answer in microseconds and the MNIST one in a millisecond or two, so what
BentoML does around every request is most of the cost:

* ``middleware_stack`` with these changes to the stack BentoML builds (``ServiceAppFactory.middlewares``):

  - ``"request-id"``: ``OpenTelemetryMiddleware`` wraps every request even when no tracing is
    configured (spans created, never exported). Unless ``tracing.exporter_type`` (or
    ``http.response.trace_id``) is set, it is replaced by ``RequestId``, which only gives each request
    the random id BentoML sends back in ``X-BentoML-Request-ID``.
  - ``"deadline"``: ``TimeoutMiddleware`` (``traffic.timeout``) runs every request in a new task and
    arms a ``loop.call_later`` it never cancels, so each request's timer, future and context live for
    the whole timeout; its 504 is outside the error shape. It is taken out and its ``timeout`` handed
    to the guard (service/api/guard.py), which answers 504 when no answer has started by then: the
    setting keeps its documented meaning.
  - ``"door-counters"``: BentoML's metrics and access-log middlewares become subclasses that also let
    the door (service/upstream/door.py) count and log the refusals it answers before the ASGI stack.

``stack(changes)`` states the resulting order (default configuration, metrics and access log on,
tracing off), outermost first; a test checks it.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from _bentoml_impl.server.app import ContextMiddleware, ServiceAppFactory
from bentoml._internal.server.http.access import AccessLogMiddleware
from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware
from bentoml._internal.server.http.traffic import TimeoutMiddleware
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.middleware import Middleware

from service.api.access import BearerAuth
from service.api.errors import ErrorShape
from service.api.guard import Guard
from service.upstream.door import AccessLog, Metrics

UPSTREAM_MIDDLEWARES = ServiceAppFactory.middlewares  # a property
STACK_CHANGES = ("request-id", "deadline", "door-counters")

_changes: set[str] = set()  # what middleware_stack() installed


def tracing_configured() -> bool:
    """Whether the BentoML configuration asks for traces (an exporter) or trace ids in responses."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return bool(BentoMLContainer.tracing.exporter_type.get() or BentoMLContainer.http.response.trace_id.get())


class RequestId:
    """What BentoML's OpenTelemetry hook did that is visible without tracing: a random 64-bit request id per request."""

    def __init__(self, app: Callable, **_: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            from bentoml._internal.context import trace_context

            trace_context.request_id = random.getrandbits(64) or 1  # contextvar: this request's task only
        await self.app(scope, receive, send)


SUBCLASSED = {RunnerTrafficMetricsMiddleware: Metrics, AccessLogMiddleware: AccessLog}


def stack(changes: set[str] | frozenset[str] = frozenset(STACK_CHANGES)) -> tuple[type, ...]:
    """The middleware stack (default configuration, tracing off) with `changes` installed, outermost first."""
    counted = "door-counters" in changes
    return ((Metrics if counted else RunnerTrafficMetricsMiddleware),
            (RequestId if "request-id" in changes else OpenTelemetryMiddleware),
            (AccessLog if counted else AccessLogMiddleware),
            *(() if "deadline" in changes else (TimeoutMiddleware,)),
            ErrorShape, BearerAuth, Guard, ContextMiddleware)


def _middlewares(self: ServiceAppFactory) -> list[Middleware]:
    upstream = UPSTREAM_MIDDLEWARES.fget(self)
    timeout = next((m.kwargs["timeout"] for m in upstream if m.cls is TimeoutMiddleware), None)
    out = []
    for m in upstream:
        if m.cls is TimeoutMiddleware and "deadline" in _changes:
            continue  # the deadline is the guard's
        if m.cls is OpenTelemetryMiddleware and "request-id" in _changes and not tracing_configured():
            m = Middleware(RequestId)
        elif m.cls in SUBCLASSED and "door-counters" in _changes:
            m = Middleware(SUBCLASSED[m.cls], *m.args, **m.kwargs)
        elif m.cls is Guard and "deadline" in _changes:
            m = Middleware(Guard, **{**m.kwargs, "timeout": timeout})
        out.append(m)
    return out


def middleware_stack(changes: set[str]) -> None:
    """ServiceAppFactory.middlewares with `changes` (of STACK_CHANGES) made; call before the ASGI app is built."""
    unknown = set(changes) - set(STACK_CHANGES)
    if unknown:
        raise ValueError(f"unknown middleware stack changes: {', '.join(sorted(unknown))}")
    _changes.clear()
    _changes.update(changes)
    ServiceAppFactory.middlewares = property(_middlewares)
