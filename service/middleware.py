"""ASGI middleware around BentoML's app: one JSON error shape, a request body limit, and content types per route.

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

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_DETAIL = 20  # a bad 1,024-image batch can carry 800,000 errors; the first few say enough


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
            if message["type"] == "http.response.start" and message["status"] >= 400:
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


async def respond(send: Send, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """Answer with the error shape and close the connection (its unread body would otherwise have to be drained)."""
    body = error_body(message)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """Refuse bodies over `max_body_bytes` (413), content types a route does not take (415), and bodies not fully
    received within `body_timeout` seconds (408), before parsing.

    The whole body is read here, then replayed to the app: a client that sends slowly (or stops) is answered 408
    and its connection closed, instead of holding a request slot until BentoML's traffic.timeout (a 504).
    """

    def __init__(self, app: Callable, max_body_bytes: int, content_types: dict[str, tuple[str, ...]],
                 body_timeout: float = 10.0):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.content_types = content_types
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        # Let the requests that arrived with this one reach the load-shedding counters (BentoML's
        # traffic.max_concurrency semaphore and service/shedding.py, which this middleware runs inside) before
        # this one runs to completion: endpoints run inline on the event loop (service/fastpath.py) and never
        # yield, so without this the counters would never see more than one request in flight.
        await asyncio.sleep(0)
        headers = {k.lower(): v.decode("latin-1") for k, v in scope["headers"]}
        allowed = self.content_types.get(scope["path"].rstrip("/") or "/")
        if allowed is not None:
            media_type = headers.get(b"content-type", "").split(";")[0].strip().lower()
            if media_type not in allowed:
                return await respond(send, 415, f"Content-Type {media_type or '(none)'!r} is not accepted here; "
                                                f"send {' or '.join(allowed)}")
        too_large = f"request body exceeds the limit of {self.max_body_bytes} bytes"
        length = headers.get(b"content-length")
        # h11 has already refused a malformed Content-Length and will refuse a body longer than it says.
        if length is not None and int(length) > self.max_body_bytes:
            return await respond(send, 413, too_large)
        # Read the body here (chunked uploads too), up to the limit and within the deadline, then hand it on.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        body, more = bytearray(), True
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                return await respond(send, 408, f"request body not received within {self.body_timeout:g} s")
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                return await respond(send, 413, too_large)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
