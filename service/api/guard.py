"""Our ASGI middleware around BentoML's app: one JSON error shape, and the guard every POST passes (types, sizes, admission, deadlines).

Why here and not in the endpoints: BentoML parses the body before our code runs, so limits and
content-type rules must act earlier, and its error bodies come in several shapes (a pydantic error
object, a one-element list for raised BentoML exceptions, plain text for 404/405).  Every error
response leaving this service is rewritten to::

    {"error": "<one readable sentence>", "detail": [<pydantic errors: loc, msg, type>]}   # detail optional
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable

from service.admission import Admission, Ticket

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_DETAIL = 20  # a bad 1,024-image batch can carry 800,000 errors; the first few say enough
RETRY_AFTER = ((b"retry-after", b"1"),)
SHAPED = "thermodigits.shaped"  # key of a response-start message whose body is already the error shape
TICKET = "thermodigits.ticket"  # scope key: the admission ticket service/door.py took for this request
UNGUARDED = ("GET", "HEAD", "OPTIONS")  # methods that are never refused or limited


def admitted_size(length: int | None, max_body_bytes: int) -> int:
    """The body bytes a request is admitted for: its declared length, or the limit when chunked (what it may grow to)."""
    return max_body_bytes if length is None else length


def error_body(error: str, detail: list | None = None) -> bytes:
    body: dict[str, Any] = {"error": error}
    if detail is not None:
        body["detail"] = detail
    return json.dumps(body).encode()


def describe(detail: list[dict[str, Any]]) -> str:
    """'readings[0]: Input should be a finite number (and 3 more errors)' from pydantic's error list."""
    first = detail[0]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.get("loc", ())).lstrip(".")
    msg = str(first.get("msg", "invalid input")).removeprefix("Value error, ")
    text = f"{where}: {msg}" if where and not msg.startswith(where) else msg
    return text + (f" (and {len(detail) - 1} more errors)" if len(detail) > 1 else "")


def normalise(status: int, content_type: str, body: bytes) -> bytes:
    try:
        data = json.loads(body) if "json" in content_type else None
    except ValueError:
        data = None
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        data = data[0]  # BentoML wraps raised exceptions' bodies in a tuple
    if not isinstance(data, dict):
        text = body.decode("utf-8", "replace").strip() or f"HTTP {status}"
        return error_body(text)
    detail = data.get("detail")
    if isinstance(detail, list) and detail and all(isinstance(d, dict) for d in detail):
        return error_body(describe(detail), detail[:MAX_DETAIL])
    error = data.get("error") or data.get("detail") or f"HTTP {status}"
    return error_body(str(error))


class ErrorShape:
    """Rewrite every 4xx/5xx response body into the one documented JSON shape (success bodies pass untouched)."""

    def __init__(self, app: Callable, **_: Any):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start: Message | None = None
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400 and not message.get(SHAPED):
                start = message
                return
            if start is None:
                return await send(message)
            if message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    headers = dict((k.lower(), v) for k, v in start.get("headers", []))
                    body = normalise(start["status"], headers.get(b"content-type", b"").decode("latin-1"), b"".join(chunks))
                    kept = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length", b"content-type")]
                    await send({**start, "headers": [*kept, (b"content-type", b"application/json"),
                                                     (b"content-length", str(len(body)).encode())]})
                    await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)


async def respond(send: Send, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = (),
                  close: bool = False) -> None:
    """Answer with the error shape; `close` the connection when its client is still sending a body we refuse to read.

    Otherwise the connection stays open: uvicorn discards the rest of an unread body. Closing after every
    429 would make each refused client reconnect, and a flood of refusals a flood of TCP handshakes.
    """
    body = error_body(message)
    close_header = ((b"connection", b"close"),) if close else ()
    await send({"type": "http.response.start", "status": status, SHAPED: True,  # ErrorShape passes it on as is
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *close_header, *headers]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Per POST, in this order: content type (415), declared size (413), admission (429, unless service/door.py
    decided it already), the body within `body_timeout` (408, or 413 when it outgrows its declared size), a place
    in the worker's queue, then the app, which must start its answer within `timeout` seconds of arrival (504).

    The body is read whole here and replayed to the app: a client that sends slowly (or stops) is answered
    408 and its connection closed, and time spent waiting for a client never counts as queueing.
    """

    def __init__(self, app: Callable, admission: Admission, content_types: Callable[[str], tuple[str, ...] | None],
                 max_body_bytes: int, body_timeout: float, timeout: float):
        self.app = app
        self.admission = admission
        self.content_types = content_types  # path -> media types it takes (None: any)
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in UNGUARDED:
            return await self.app(scope, receive, send)
        media_type, length = "", None
        for key, value in scope["headers"]:
            key = key.lower()
            if key == b"content-type":
                media_type = value.decode("latin-1").split(";")[0].strip().lower()
            elif key == b"content-length":
                length = int(value)  # h11/httptools have already refused a malformed one
        allowed = self.content_types(scope["path"])
        if allowed is not None and media_type not in allowed:
            return await respond(send, 415, f"Content-Type {media_type or '(none)'!r} is not accepted here; "
                                            f"send {' or '.join(allowed)}")
        if length is not None and length > self.max_body_bytes:
            return await respond(send, 413, self._too_large, close=True)
        ticket: Ticket | None = scope.get(TICKET)  # admitted by service/door.py, which releases it if we do not
        if ticket is None:  # no door in front (an in-process ASGI client): admission is decided here
            size = admitted_size(length, self.max_body_bytes)
            refusal = self.admission.refusal(size)
            if refusal:
                return await respond(send, 429, refusal, RETRY_AFTER)
            ticket = self.admission.admit(size)
        served = False
        started = False

        async def send_and_note(message: Message) -> None:
            nonlocal started
            if not started and message["type"] == "http.response.start":
                started = True
                deadline.reschedule(None)  # answering: the deadline is met
            await send(message)

        try:
            async with asyncio.timeout(self.timeout) as deadline:
                body = await self._read_body(receive, send)
                if body is None:
                    return
                await self.admission.serve(ticket)
                served = True
                await self.app(scope, _replay(body, receive), send_and_note)
        except TimeoutError:
            if not started:
                await respond(send, 504, f"the request was not answered within {self.timeout:g} s")
        finally:
            self.admission.finish(ticket, served)

    @property
    def _too_large(self) -> str:
        return f"request body exceeds the limit of {self.max_body_bytes} bytes"

    async def _read_body(self, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None once this has answered (408, 413) or the client has gone."""
        body, more = bytearray(), True
        try:
            async with asyncio.timeout(self.body_timeout):
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    body += message.get("body", b"")
                    more = message.get("more_body", False)
                    if len(body) > self.max_body_bytes:
                        await respond(send, 413, self._too_large, close=True)
                        return None
        except TimeoutError:
            await respond(send, 408, f"request body not received within {self.body_timeout:g} s", close=True)
            return None
        return bytes(body)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that gives the app the body read already, then whatever the client sends next (disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
