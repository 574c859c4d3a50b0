"""The guard every POST passes before BentoML parses it: content type, sizes, admission, the body's arrival and the request's deadline.

Why here and not in the endpoints: BentoML parses the body before our code runs, so limits and
content-type rules must act earlier. Every refusal is answered in the error shape (service/api/errors.py).
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import bentoml

from service.api.errors import respond
from service.core.admission import Admission, Ticket
from service.core.errors import Kind, ServingError

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TICKET = "thermodigits.ticket"  # scope key: the admission ticket service/upstream/door.py took for this request
UNGUARDED = ("GET", "HEAD", "OPTIONS")  # methods that are never refused or limited


def admitted_size(length: int | None, max_body_bytes: int) -> int:
    """The body bytes a request is admitted for: its declared length, or the limit when chunked (what it may grow to)."""
    return max_body_bytes if length is None else length


class Guard:
    """Per POST, in this order: content type (415), declared size (413), admission (429, unless the door
    (service/upstream/door.py) decided it already), the body within `body_timeout` (408, or 413 when it outgrows
    its declared size), a place in the worker's queue, then the app, which must start its answer within `timeout`
    seconds of arrival (504; None: no deadline here). Every answer names the worker (``x-worker``).

    The body is read whole here and replayed to the app: a client that sends slowly (or stops) is answered
    408 and its connection closed, and time spent waiting for a client never counts as queueing.
    """

    def __init__(self, app: Callable, admission: Admission, accepts: Callable[[str], Any], max_body_bytes: int,
                 body_timeout: float, timeout: float | None, worker: int | None = None):
        self.app = app
        self.admission = admission
        self.accepts = accepts  # path -> its Accepts (service/api/routes.py), None: not ours to judge
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.timeout = timeout
        worker = bentoml.server_context.worker_index if worker is None else worker  # the app is built in the worker
        self.worker = (b"x-worker", str(worker).encode()) if worker is not None else None

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
        accepts = self.accepts(scope["path"])
        if accepts is not None and media_type not in accepts.media_types:
            return await respond(send, ServingError(accepts.refusal(media_type), Kind.MEDIA_TYPE))
        if length is not None and length > self.max_body_bytes:
            return await respond(send, self._too_large, close=True)
        ticket: Ticket | None = scope.get(TICKET)  # admitted at the door, which releases it if we do not
        try:
            if ticket is None:  # no door in front (an in-process ASGI client): admission is decided here
                ticket = self.admission.enter(admitted_size(length, self.max_body_bytes), self.timeout)
        except ServingError as e:
            return await respond(send, e)
        started = False
        worker = self.worker

        async def send_and_note(message: Message) -> None:
            nonlocal started
            if not started and message["type"] == "http.response.start":
                started = True
                self.admission.answering(ticket)
                if worker is not None:
                    message["headers"] = [*message.get("headers", ()), worker]
            await send(message)

        try:
            body = await self._read_body(ticket, receive, send)
            if body is None:
                return
            async with self.admission.place(ticket):
                await self.app(scope, _replay(body, receive), send_and_note)
        except ServingError as e:  # the deadline, in the queue or before the app answered
            if not started:
                await respond(send, e)
        finally:
            self.admission.release(ticket)

    @property
    def _too_large(self) -> ServingError:
        return ServingError(f"request body exceeds the limit of {self.max_body_bytes} bytes", Kind.TOO_LARGE)

    async def _read_body(self, ticket: Ticket, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None once this has answered (408, 413) or the client has gone; ServingError (504)
        past the request's deadline."""
        body, more = bytearray(), True
        try:
            async with asyncio.timeout_at(ticket.deadline):
                try:
                    async with asyncio.timeout(self.body_timeout):
                        while more:
                            message = await receive()
                            if message["type"] == "http.disconnect":
                                return None
                            body += message.get("body", b"")
                            more = message.get("more_body", False)
                            if len(body) > self.max_body_bytes:
                                await respond(send, self._too_large, close=True)
                                return None
                except TimeoutError:
                    await respond(send, ServingError(f"request body not received within {self.body_timeout:g} s",
                                                     Kind.TIMEOUT), close=True)
                    return None
        except TimeoutError:
            raise ServingError(f"the request was not answered within {ticket.timeout:g} s", Kind.DEADLINE) from None
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
