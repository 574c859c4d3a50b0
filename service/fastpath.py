"""Work-arounds for BentoML 1.4.40's per-request overhead; each has a test in tests/test_fastpath.py that fails once upstream changes.

The thermometer models answer in microseconds and the MNIST one in a millisecond or two, so what
BentoML does around every request is most of the cost. Five things it does on every request that it need not:

1. ``IOMixin.mime_type()`` runs for every response, and for root-model outputs (our ``/digits``
   list) it regenerates the type's whole JSON schema with pydantic just to read its "type". The
   answer depends only on the class and its ``media_type``, which are fixed once the service is
   defined, so it is cached per class here.
2. ``OpenTelemetryMiddleware`` wraps every request even when no tracing is configured (BentoML's
   default sample rate is 0: spans are created, never exported). Unless ``tracing.exporter_type``
   (or ``http.response.trace_id``) is set in the BentoML configuration, it is replaced here by a
   middleware that only gives each request the random id BentoML sends back in the
   ``X-BentoML-Request-ID`` header. With tracing off, access-log lines no longer carry the
   unsampled random trace/span ids.
3. Every sync endpoint is run in a worker thread (``ServiceAppFactory._to_thread``): a queue put,
   a thread wake-up and a self-pipe write back to the event loop, plus GIL hand-offs, for work
   that takes microseconds to milliseconds. Endpoints marked ``@fastpath.inline`` run on the
   event loop instead; they stay plain sync methods, so calling them in-process is unchanged.
4. Reading an endpoint from the service instance (``APIMethod.__get__``, once per request) builds
   a new wrapper each time, with ``inspect.signature`` and ``functools.wraps``. The wrapper depends
   only on the method and the instance, so it is built once per instance here.
5. ``TimeoutMiddleware`` (``traffic.timeout``) arms a ``loop.call_later(timeout, ...)`` per request
   and never cancels it, so every request's timer, future and context copy stay alive for the
   whole timeout (30 s here): at 1,500 req/s that is ~45,000 live timers per worker, a bigger
   timer heap, and a gen-2 garbage collection that grows to scan them all (the 50-150 ms latency
   spikes we measured). The same middleware is used here with the timer cancelled once the
   request is answered; time-outs still give the same 504.
"""

from __future__ import annotations

import asyncio
import random
import weakref
from typing import Any, Callable, TypeVar

from _bentoml_impl.server.app import ServiceAppFactory
from _bentoml_sdk.io_models import IOMixin
from _bentoml_sdk.method import APIMethod
from bentoml._internal.server.http.traffic import TimeoutMiddleware
from bentoml._internal.utils import get_original_func
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.middleware import Middleware

F = TypeVar("F", bound=Callable[..., Any])
INLINE = "__fastpath_inline__"

_upstream_mime_type = IOMixin.mime_type.__func__  # the function behind the classmethod
_upstream_middlewares = ServiceAppFactory.middlewares  # a property
_upstream_to_thread = ServiceAppFactory._to_thread
_upstream_local_call = APIMethod._local_call
_upstream_timeout_call = TimeoutMiddleware.__call__
CALLERS = "__fastpath_local_callers__"  # instance attribute: endpoint name -> its built wrapper

# class -> (its media_type when cached, mime type); weak keys: BentoML's clients create IO classes too.
_mime_types: "weakref.WeakKeyDictionary[type, tuple[str | None, str]]" = weakref.WeakKeyDictionary()


def _mime_type(cls: type) -> str:
    cached = _mime_types.get(cls)
    if cached is not None and cached[0] == cls.media_type:  # media_type is set after class creation
        return cached[1]
    value = _upstream_mime_type(cls)
    _mime_types[cls] = (cls.media_type, value)
    return value


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


def _middlewares(self: ServiceAppFactory) -> list[Middleware]:
    middlewares = _upstream_middlewares.fget(self)
    if tracing_configured():
        return middlewares
    return [Middleware(RequestId) if m.cls is OpenTelemetryMiddleware else m for m in middlewares]


def inline(func: F) -> F:
    """Mark a sync endpoint as microseconds of work: BentoML runs it on the event loop, not in a thread.

    Put it under ``@bentoml.api``. Only for work that never blocks for long: while it runs, the
    worker serves nothing else.
    """
    setattr(func, INLINE, True)
    return func


async def _to_thread(self: ServiceAppFactory, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    if getattr(get_original_func(func), INLINE, False):
        return func(*args, **kwargs)
    return await _upstream_to_thread(self, func, *args, **kwargs)


def _local_call(self: APIMethod, instance: Any) -> Callable[..., Any]:
    callers = getattr(instance, "__dict__", None)
    if callers is None:  # an instance without __dict__: nowhere to keep it
        return _upstream_local_call(self, instance)
    callers = callers.setdefault(CALLERS, {})
    caller = callers.get(self.name)
    if caller is None or caller.func is not self.func:
        caller = callers[self.name] = _upstream_local_call(self, instance)
    return caller


async def _timeout_call(self: TimeoutMiddleware, scope: dict, receive: Callable, send: Callable) -> None:
    """Upstream's TimeoutMiddleware.__call__ line for line, plus ``timer.cancel()`` at the end."""
    if scope["type"] not in ("http", "websocket"):
        return await self.app(scope, receive, send)
    from starlette.responses import JSONResponse

    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

    async def _send(message: dict) -> None:
        if not waiter.done():
            waiter.set_result(None)
        await send(message)

    fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
    try:
        await waiter
    except asyncio.TimeoutError:
        if fut.cancel():
            resp = JSONResponse({"error": f"Not able to process the request in {self.timeout} seconds"}, status_code=504)
            await resp(scope, receive, send)
    else:
        timer.cancel()  # answered in time: drop the timer now, not `timeout` seconds from now
        await fut
    finally:
        timer.cancel()  # also when this task is cancelled (client gone); a no-op when already done


def install() -> None:
    """Idempotent: patch the five places once per process (call before the ASGI app is built)."""
    TimeoutMiddleware.__call__ = _timeout_call
    APIMethod._local_call = _local_call
    IOMixin.mime_type = classmethod(_mime_type)
    ServiceAppFactory.middlewares = property(_middlewares)
    ServiceAppFactory._to_thread = _to_thread
