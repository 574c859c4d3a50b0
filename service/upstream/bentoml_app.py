"""Work-arounds for BentoML 1.4.40's per-request overhead and request deadline; each has a test in tests/test_fastpath.py that fails once upstream changes.

The thermometer models answer in microseconds and the MNIST one in a millisecond or two, so what
BentoML does around every request is most of the cost. Five things done on every request that need not be:

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
3. Reading an endpoint from the service instance (``APIMethod.__get__``, once per request) builds
   a new wrapper each time, with ``inspect.signature`` and ``functools.wraps``. The wrapper depends
   only on the method and the instance, so it is built once per instance here.
4. ``TimeoutMiddleware`` (``traffic.timeout``, which BentoML requires to be > 0) runs every request
   in a new task and arms a ``loop.call_later`` it never cancels, so each request's timer, future
   and context stay alive for the whole timeout (30 s: ~45,000 per worker at 1,500 req/s, and
   50-150 ms garbage-collection pauses); its 504 is outside our error shape. It is taken out of the
   stack and its ``timeout`` handed to our ``Guard`` (service/middleware.py), which owns the request
   deadline: one ``asyncio.timeout`` per request, disarmed once the answer starts.

5. Every answer writes an access-log line (refusals at the door too), and for each record Python's
   ``logging`` walks up the stack to find its caller (~10 frames under the ASGI stack) and reads the
   thread and process names: ~8 µs of a ~40-µs refusal (2026-11-28), for fields BentoML's worker log
   format never prints. ``lighten_log_records`` turns that off as the logging HOWTO's "Optimization"
   section describes, unless a handler's format in the worker asks for one of those fields.

And BentoML's metrics and access-log middlewares are swapped for subclasses that do the same and
also let service/door.py count and log the refusals it answers before the ASGI stack.

``MIDDLEWARE_ORDER`` states the resulting stack (default configuration), outermost first; a test checks it.
"""

from __future__ import annotations

import logging
import random
import re
import weakref
from typing import Any, Callable

from _bentoml_impl.server.app import ContextMiddleware, ServiceAppFactory
from _bentoml_sdk.io_models import IOMixin
from _bentoml_sdk.method import APIMethod
from bentoml._internal.server.http.access import AccessLogMiddleware
from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware
from bentoml._internal.server.http.traffic import TimeoutMiddleware
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.middleware import Middleware

from service.door import AccessLog, Metrics
from service.middleware import ErrorShape, Guard

_upstream_mime_type = IOMixin.mime_type.__func__  # the function behind the classmethod
_upstream_middlewares = ServiceAppFactory.middlewares  # a property
_upstream_local_call = APIMethod._local_call
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


# The stack in the default configuration (metrics and access log on, tracing off), outermost first.
MIDDLEWARE_ORDER = (Metrics, RequestId, AccessLog, ErrorShape, Guard, ContextMiddleware)
SUBCLASSED = {RunnerTrafficMetricsMiddleware: Metrics, AccessLogMiddleware: AccessLog}


def _middlewares(self: ServiceAppFactory) -> list[Middleware]:
    upstream = _upstream_middlewares.fget(self)
    timeout = next((m.kwargs["timeout"] for m in upstream if m.cls is TimeoutMiddleware), None)
    stack = []
    for m in upstream:
        if m.cls is TimeoutMiddleware:
            continue  # the deadline is Guard's
        if m.cls is OpenTelemetryMiddleware and not tracing_configured():
            m = Middleware(RequestId)
        elif m.cls in SUBCLASSED:
            m = Middleware(SUBCLASSED[m.cls], *m.args, **m.kwargs)
        elif m.cls is Guard:
            m = Middleware(Guard, **{**m.kwargs, "timeout": timeout})
        stack.append(m)
    return stack


def _local_call(self: APIMethod, instance: Any) -> Callable[..., Any]:
    callers = getattr(instance, "__dict__", None)
    if callers is None:  # an instance without __dict__: nowhere to keep it
        return _upstream_local_call(self, instance)
    callers = callers.setdefault(CALLERS, {})
    caller = callers.get(self.name)
    if caller is None or caller.func is not self.func:
        caller = callers[self.name] = _upstream_local_call(self, instance)
    return caller


# LogRecord fields that cost work per record; none is in BentoML's worker format (bentoml._internal.log).
COSTLY_RECORD_FIELDS = ("pathname", "filename", "module", "lineno", "funcName", "thread", "threadName", "process",
                        "processName", "taskName")
COSTLY_FIELD = re.compile(r"\b(%s)\b" % "|".join(COSTLY_RECORD_FIELDS))  # in any format style; a false alarm only keeps them


def lighten_log_records(loggers: tuple[str, ...] = ("", "bentoml", "bentoml.access")) -> bool:
    """Stop gathering COSTLY_RECORD_FIELDS for every log record, unless a handler of `loggers` formats one; True if done."""
    for name in loggers:
        for handler in logging.getLogger(name).handlers:
            fmt = getattr(handler.formatter, "_fmt", None) or ""
            if COSTLY_FIELD.search(fmt):
                return False
    logging._srcfile = None  # no stack walk for pathname/lineno/funcName
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # Python 3.12+; an unused attribute before
    return True


def install() -> None:
    """Idempotent: patch the three BentoML places once per process (call before the ASGI app is built), and lighten log records."""
    lighten_log_records()
    APIMethod._local_call = _local_call
    IOMixin.mime_type = classmethod(_mime_type)
    ServiceAppFactory.middlewares = property(_middlewares)
