"""The one shape of every HTTP error answer, ``{"error": "<one sentence>", "detail": [<pydantic errors>]?}``, and everything that writes it.

BentoML answers its own errors in several shapes (a pydantic error object, a one-element list for
raised BentoML exceptions, plain text for 404/405); ``ErrorShape`` rewrites them all. Our own code
answers a ``ServingError`` (service/core/errors.py: its status and headers from the one table) through
``error_body`` (raw bytes: service/upstream/door.py), ``respond`` (ASGI: the guard) or ``error_response``
(Starlette routes: /metadata, the v2 protocol).
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from starlette.responses import Response

from service.core.errors import ServingError

Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]

MAX_DETAIL = 20  # a bad 1,024-image batch can carry 800,000 errors; the first few say enough
SHAPED = "thermodigits.shaped"  # key of a response-start message whose body is already the error shape
JSON = "application/json"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Error",
    "description": "Every error answer of this service.",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {"type": "string", "description": "One readable sentence."},
        "detail": {
            "type": "array",
            "description": f"For invalid JSON input: the first validation errors (pydantic), at most {MAX_DETAIL}.",
            "maxItems": MAX_DETAIL,
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}


def error_body(error: str, detail: list | None = None) -> bytes:
    """The error shape's bytes."""
    body: dict[str, Any] = {"error": error}
    if detail is not None:
        body["detail"] = detail[:MAX_DETAIL]
    return json.dumps(body).encode()


def error_response(error: ServingError) -> Response:
    """The error shape as a Starlette response."""
    return Response(error_body(str(error)), status_code=error.status, media_type=JSON, headers=dict(error.headers))


async def respond(send: Send, error: ServingError, close: bool = False) -> None:
    """Answer an ASGI request with the error shape; `close` the connection when its client is still sending a body we refuse to read.

    Otherwise the connection stays open: uvicorn discards the rest of an unread body. Closing after every
    429 would make each refused client reconnect, and a flood of refusals a flood of TCP handshakes.
    """
    body = error_body(str(error))
    close_header = ((b"connection", b"close"),) if close else ()
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in error.headers]
    await send({"type": "http.response.start", "status": error.status, SHAPED: True,  # ErrorShape passes it on
                "headers": [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode()),
                            *close_header, *headers]})
    await send({"type": "http.response.body", "body": body})


def describe(detail: list[dict[str, Any]]) -> str:
    """'readings[0]: Input should be a finite number (and 3 more errors)' from pydantic's error list."""
    first = detail[0]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.get("loc", ())).lstrip(".")
    msg = str(first.get("msg", "invalid input")).removeprefix("Value error, ")
    text = f"{where}: {msg}" if where and not msg.startswith(where) else msg
    return text + (f" (and {len(detail) - 1} more errors)" if len(detail) > 1 else "")


def normalise(status: int, content_type: str, body: bytes) -> bytes:
    """Any error body (BentoML's JSON shapes, plain text) as the error shape."""
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
        return error_body(describe(detail), detail)
    error = data.get("error") or data.get("detail") or f"HTTP {status}"
    return error_body(str(error))


class ErrorShape:
    """ASGI middleware: rewrite every 4xx/5xx response body into the error shape (success bodies pass untouched)."""

    def __init__(self, app: Callable, **_: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Send) -> None:
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
                    body = normalise(start["status"], headers.get(b"content-type", b"").decode("latin-1"),
                                     b"".join(chunks))
                    kept = [(k, v) for k, v in start.get("headers", [])
                            if k.lower() not in (b"content-length", b"content-type")]
                    await send({**start, "headers": [*kept, (b"content-type", JSON.encode()),
                                                     (b"content-length", str(len(body)).encode())]})
                    await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)
