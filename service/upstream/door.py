"""Answers at the door: a request the worker must refuse gets its 429 (or 401, 431) from uvicorn's HTTP protocol, before any ASGI task, middleware or BentoML code runs for it.

Why: under an open-loop flood most requests are refused, so a refusal must cost little next to an
answer; through the ASGI stack a 429 cost about twice as much as here (docs/decisions/door.md).

How (uvicorn 0.54, no setting for it): BentoML's worker builds ``uvicorn.Config`` with ``http="auto"``,
and uvicorn resolves that name through ``uvicorn.config.HTTP_PROTOCOLS``; ``install()`` points it at
``Door``, uvicorn's httptools protocol with one method overridden: ``_start_asgi_task``, called once a
request's headers are parsed and its ASGI task is about to be created. ``Door`` asks the worker's
``Admission`` there (service/core/admission.py: the one place that decides). A refused request is
answered in the error shape with ``Retry-After``, the connection kept (uvicorn skips the unread body,
as it does for any early answer), and counted in BentoML's request metrics and written to its access
log in BentoML's format, like every other answer. An admitted request carries its admission ticket to
the guard (service/api/guard.py) in the scope; the ticket is released when the request's task ends,
whatever happens inside. Not covered by the door: GET/HEAD/OPTIONS (never refused), bodies declared
over the size limit (the guard answers 413), and any server not started through uvicorn's "auto"
protocol (in-process ASGI clients): there the guard asks ``Admission`` itself.

``use_asyncio_loop()`` gives the worker asyncio's event loop where uvicorn would pick uvloop: libuv
accepts one connection per loop iteration (libuv PR #3696), so while the loop was busy a burst of new
connections waited seconds in the kernel's accept queue (docs/decisions/asyncio-loop.md).
"""

from __future__ import annotations

import functools
import http
from timeit import default_timer
from typing import Any, Callable

import uvicorn.config
from bentoml._internal.context import server_context
from bentoml._internal.server.http.access import AccessLogMiddleware
from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware

from service.api.access import AUTHORIZED, authorization, scope_of
from service.api.errors import error_body
from service.api.guard import TICKET, UNGUARDED, admitted_size
from service.core import access_log
from service.core.admission import Admission, Ticket
from service.core.auth import Access
from service.core.errors import Kind, ServingError
from service.upstream.server import Protocol

UPSTREAM_AUTO_LOOP = uvicorn.config.LOOP_FACTORIES["auto"]  # what use_asyncio_loop replaces (uvloop's when installed)


class Door(Protocol):
    """uvicorn's httptools protocol (draining: service/upstream/server.py), answering before a request becomes an ASGI
    task: 431 for oversized headers, 401 for a missing or wrong bearer token, 429 for what the worker's Admission
    refuses."""

    admission: Admission | None = None  # set by install(); None: every request goes on to the guard
    auth: Access | None = None  # None: no token needed
    timeout: float | None = None  # traffic.timeout: the admitted request's deadline
    max_body_bytes = 0
    max_header_bytes = 0  # 0: no limit
    metrics: "Metrics | None" = None  # BentoML's middlewares of this worker, once the app is built
    access: "AccessLog | None" = None
    began = 0.0  # when the current request's first bytes were parsed (for the access log and histogram)
    head_bytes = 0  # bytes received while they are
    began_here = ended_here = False  # a request began, or one ended, in the chunk being fed

    def on_message_begin(self) -> None:
        self.began = default_timer()
        self.head_bytes, self.began_here = 0, True
        super().on_message_begin()  # head_open

    def on_message_complete(self) -> None:
        self.ended_here = True
        super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        # uvicorn's httptools protocol sets no limit on a request's head: a 10 MB header is read, kept and handed on.
        # A head still open after a chunk is fed counts the chunk when the chunk is all head (it continued a head, or
        # began one right after an earlier chunk ended a request); memory stays within the limit and two chunks. A head
        # that arrives whole is measured in _start_asgi_task.
        continued = self.head_open
        self.began_here = self.ended_here = False
        super().data_received(data)
        if self.head_open and self.max_header_bytes and not self.transport.is_closing():
            if continued or not self.ended_here:
                self.head_bytes += len(data)
            if self.head_bytes > self.max_header_bytes:
                self._head_too_large()

    def _head_too_large(self) -> None:
        self.logger.warning("a request line and headers of more than %d bytes: answered 431", self.max_header_bytes)
        body = error_body(f"the request line and headers exceed {self.max_header_bytes} bytes")
        self.transport.write(self._head(Kind.HEAD_TOO_LARGE.status, body, [(b"connection", b"close")]) + body)
        self.transport.close()

    def _start_asgi_task(self, cycle: Any, app: Callable) -> None:
        admission, scope = self.admission, cycle.scope
        if self.max_header_bytes and (len(self.url) + sum(len(k) + len(v) + 4 for k, v in scope["headers"])
                                      > self.max_header_bytes):
            cycle.response_complete = True
            return self._head_too_large()
        try:
            if self.auth is not None:
                needed = scope_of(scope["path"])
                if self.auth.needed(needed):
                    self.auth.check(authorization(scope["headers"]), needed)
                    scope[AUTHORIZED] = True
            if admission is None or scope["method"] in UNGUARDED:
                return super()._start_asgi_task(cycle, app)
            length = next((v for k, v in scope["headers"] if k == b"content-length"), None)  # names are lower case
            size = admitted_size(None if length is None else int(length), self.max_body_bytes)
            if size > self.max_body_bytes:
                return super()._start_asgi_task(cycle, app)  # the guard answers 413
            scope[TICKET] = ticket = admission.enter(size, self.timeout)
        except ServingError as e:
            return self._answer(cycle, e)
        super()._start_asgi_task(cycle, functools.partial(_released, app, admission, ticket))

    def _head(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
        head = [b"HTTP/1.1 %d %s\r\n" % (status, http.HTTPStatus(status).phrase.encode())]
        for name, value in [*self.server_state.default_headers, (b"content-type", b"application/json"),
                            (b"content-length", b"%d" % len(body)), *headers]:  # uvicorn's Date header first
            head += [name, b": ", value, b"\r\n"]
        return b"".join([*head, b"\r\n"])

    def _answer(self, cycle: Any, error: ServingError) -> None:
        """Answer the refusal in the error shape without reading the body; count and log it as BentoML would."""
        status, body = error.status, error_body(str(error))
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in error.headers]
        # With "Expect: 100-continue" the client may still send the body we will never ask for: close.
        keep_alive = (cycle.keep_alive and not cycle.waiting_for_100_continue
                      and not (self.drain is not None and self.drain.draining))
        self.transport.write(self._head(status, body, headers if keep_alive else [*headers, (b"connection", b"close")])
                             + body)
        cycle.response_complete = True  # from here uvicorn discards this request's body
        cycle.keep_alive = keep_alive
        try:  # an exception here would reach httptools, which would answer 400 on an answered request
            self._record(cycle.scope, status, len(body), default_timer() - self.began)
        except Exception:
            self.logger.exception("an answer of the door was not counted or logged")
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()  # keep-alive timer, or the next pipelined request

    def _record(self, scope: dict, status: int, length: int, seconds: float) -> None:
        """What BentoML's metrics and access-log middlewares record for an answer, for one they never saw."""
        path = scope["path"]
        if self.metrics is not None:  # BentoML counts every path (its skip_paths only spare a gauge)
            self.metrics.count(path, status, seconds)
        if self.access is not None and not path.startswith(tuple(self.access.skip_paths)):
            self.access.write(scope, status, length, seconds)


async def _released(app: Callable, admission: Admission, ticket: Ticket, scope: dict, receive: Callable,
                    send: Callable) -> None:
    """Run the app; then release the ticket if Guard did not (an error before it, or a request it never saw)."""
    try:
        await app(scope, receive, send)
    finally:
        admission.release(ticket)  # no-op once Guard has finished it


class Metrics(RunnerTrafficMetricsMiddleware):
    """BentoML's request metrics middleware, telling the door where its series are."""

    def __init__(self, app: Callable, **kwargs: Any):
        super().__init__(app, **kwargs)
        self._door_series: dict[tuple[str, int], tuple[Any, Any]] = {}  # (path, status) -> (counter, histogram)
        Door.metrics = self  # one app per worker process

    def count(self, endpoint: str, status: int, seconds: float) -> None:
        series = self._door_series.get((endpoint, status))
        if series is None:  # labels() costs as much as the rest of a refusal: once per endpoint and status
            if not self._is_setup:
                self._setup()
            labels = dict(endpoint=endpoint, service_name=server_context.bento_name,
                          service_version=server_context.bento_version, http_response_code=status,
                          runner_name=server_context.service_name)
            series = (self.metrics_request_total.labels(**labels), self.metrics_request_duration.labels(**labels))
            if len(self._door_series) < 256:  # paths come from clients: keep the cache bounded
                self._door_series[(endpoint, status)] = series
        series[0].inc()
        series[1].observe(seconds)


class AccessLog(AccessLogMiddleware):
    """BentoML's access-log middleware, telling the door its logger and which fields it writes."""

    def __init__(self, app: Callable, **kwargs: Any):
        super().__init__(app, **kwargs)
        Door.access = self

    def write(self, scope: dict, status: int, length: int, seconds: float) -> None:
        """One line with the fields AccessLogMiddleware.__call__ (bentoml 1.4.40) writes for a JSON answer."""
        client = scope.get("client")
        request = [f"scheme={scope['scheme']}", f"method={scope['method']}", f"path={scope['path']}"]
        headers = dict(scope["headers"]) if self.has_request_content_type or self.has_request_content_length else {}
        if self.has_request_content_type:
            request.append(f"type={headers.get(b'content-type', b'').decode('latin-1')}")
        if self.has_request_content_length:
            request.append(f"length={headers.get(b'content-length', b'').decode('latin-1')}")
        response = [f"status={status}"]
        if self.has_response_content_type:
            response.append("type=application/json")
        if self.has_response_content_length:
            response.append(f"length={length}")
        access_log.write(f"{client[0]}:{client[1]}" if client else "_", request, response, seconds)


def install(admission: Admission, max_body_bytes: int, access: Access | None = None, max_header_bytes: int = 0,
            timeout: float | None = None) -> None:
    """Idempotent: uvicorn's "auto" HTTP protocol becomes Door, answering for `admission` and `access`, admitted
    requests given `timeout` seconds (call before uvicorn.Config.load)."""
    Door.admission, Door.max_body_bytes, Door.auth, Door.max_header_bytes = (admission, max_body_bytes, access,
                                                                             max_header_bytes)
    Door.timeout = timeout
    uvicorn.config.HTTP_PROTOCOLS["auto"] = Door  # uvicorn's import_from_string returns a class as is


def use_asyncio_loop() -> None:
    """Idempotent: uvicorn's "auto" event loop becomes asyncio's, not uvloop (see the module docstring)."""
    uvicorn.config.LOOP_FACTORIES["auto"] = uvicorn.config.LOOP_FACTORIES["asyncio"]
