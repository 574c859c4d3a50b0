"""service/api/guard.py's Guard, in process: each refusal (408/413/415/429/504) and that nothing it holds leaks."""

from __future__ import annotations

import asyncio
import json

import pytest

from service.api import routes
from service.core.admission import Admission
from service.api.errors import ErrorShape
from service.api.guard import TICKET, Guard
from testkit.wait import wait_until_async


class App:
    """Records the body it was given and answers 200; with `stalled`, never starts its answer (until cancelled); with
    `outlast`, starts its answer, then finishes it only after that many seconds."""

    def __init__(self, stalled: bool = False, outlast: float = 0.0):
        self.stalled, self.outlast = stalled, outlast
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send):
        message = await receive()
        self.bodies.append(message["body"])
        if self.stalled:
            await asyncio.Event().wait()  # an app that never answers: only the guard's deadline ends it
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if self.outlast:  # time passing is the behaviour here: the answer goes on past the guard's deadline (a timer
            await asyncio.sleep(self.outlast)  # of the same event loop, so this outlasts it whatever the host's speed)
        await send({"type": "http.response.body", "body": b"ok"})


def guard(app, admission=None, timeout=5.0, body_timeout=5.0, max_body=100):
    admission = admission or Admission(0.5, 4, 100, 10_000)
    accepts = lambda path: routes.JSON if path == "/digit" else None  # noqa: E731
    return Guard(app, admission, accepts, max_body, body_timeout, timeout), admission


def scope(method="POST", path="/digit", content_type="application/json", length: int | None = 2):
    headers = [(b"content-type", content_type.encode())] if content_type else []
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http", "method": method, "path": path, "headers": headers}


async def call(app, s, chunks=(b"{}",), held: asyncio.Event | None = None):
    """Run one request whose body arrives in `chunks`; with `held`, every chunk after the first waits for that gate
    (never set: a client that stops sending). Returns (status, headers, body)."""
    queue = list(chunks)
    sent: list[dict] = []

    async def receive():
        if queue:
            if held is not None and len(queue) < len(chunks):
                await held.wait()
            chunk = queue.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(queue)}
        await asyncio.sleep(3600)  # a client that has sent everything and waits: for ever, as far as a test goes

    async def send(message):
        sent.append(message)

    await asyncio.wait_for(app(s, receive, send), 60)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


async def refused_while_one_is_held(g, adm):
    """A request whose body is held back (gate) occupies the one place; once it is admitted, another is refused.
    Returns (the refused request's answer, the held request's answer once let through)."""
    gate = asyncio.Event()
    first = asyncio.ensure_future(call(g, scope(length=2), chunks=(b"{", b"}"), held=gate))
    await wait_until_async(lambda: adm.held == 1, message="the first request to be admitted")
    refused = await call(g, scope())
    gate.set()
    return refused, await first


def test_a_good_request_reaches_the_app_with_its_whole_body():
    app = App()
    g, adm = guard(app)
    status, _, body = asyncio.run(call(g, scope(length=4), chunks=(b"{", b"}", b"  ")))
    assert (status, body, app.bodies) == (200, b"ok", [b"{}  "])
    assert (adm.held, adm.serving, adm.bytes) == (0, 0, 0)


def test_wrong_content_type_is_415_before_anything_else():
    app = App()
    g, adm = guard(app)
    status, headers, body = asyncio.run(call(g, scope(content_type="text/plain")))
    assert status == 415 and "send application/json" in json.loads(body)["error"]
    assert headers["content-type"] == "application/json" and app.bodies == []


def test_declared_size_over_the_limit_is_413_unread():
    g, adm = guard(App(), max_body=100)
    status, _, body = asyncio.run(call(g, scope(length=101)))
    assert status == 413 and "limit of 100 bytes" in json.loads(body)["error"]


def test_a_chunked_body_that_outgrows_the_limit_is_413():
    app = App()
    g, adm = guard(app, max_body=10)
    status, _, _ = asyncio.run(call(g, scope(length=None), chunks=(b"x" * 6, b"x" * 6)))
    assert status == 413 and app.bodies == [] and adm.held == 0


def test_a_body_not_received_in_time_is_408_and_frees_its_place():
    app = App()
    g, adm = guard(app, body_timeout=0.05)
    stopped = asyncio.Event()  # never set: the client sends "{" and no more
    status, _, body = asyncio.run(call(g, scope(length=2), chunks=(b"{", b"}"), held=stopped))
    assert status == 408 and "0.05 s" in json.loads(body)["error"]
    assert (adm.held, adm.bytes, app.bodies) == (0, 0, [])


def test_refused_by_admission_is_429_with_retry_after_and_the_reason():
    g, adm = guard(App(), admission=Admission(0.5, 1, max_requests=1, max_bytes=10_000))
    (status, headers, body), (first_status, _, _) = asyncio.run(refused_while_one_is_held(g, adm))
    assert status == 429 and headers["retry-after"] == "1" and "limit 1" in json.loads(body)["error"]
    assert first_status == 200 and adm.held == 0


def test_a_request_admitted_at_the_door_is_not_asked_again_and_its_ticket_is_finished():
    adm = Admission(0.5, 1, max_requests=1, max_bytes=10_000)
    g, _ = guard(App(), admission=adm)
    ticket = adm.admit(2)  # what service/door.py did: the one place is this request's
    s = {**scope(), TICKET: ticket}
    status, _, _ = asyncio.run(call(g, s))
    assert status == 200 and ticket.done and (adm.held, adm.finished) == (0, 1)


def test_no_answer_started_within_the_deadline_is_504():
    g, adm = guard(App(stalled=True), timeout=0.05)
    status, _, body = asyncio.run(call(g, scope()))
    assert status == 504 and "0.05 s" in json.loads(body)["error"]
    assert (adm.held, adm.serving) == (0, 0)


def test_the_deadline_is_disarmed_once_the_answer_starts():
    g, _ = guard(App(outlast=0.2), timeout=0.05)  # four times the deadline
    status, _, body = asyncio.run(call(g, scope()))
    assert (status, body) == (200, b"ok")


def test_get_requests_pass_untouched():
    app = App()
    g, adm = guard(app, admission=Admission(0.5, 1, max_requests=0, max_bytes=0))  # would refuse any POST
    status, _, _ = asyncio.run(call(g, scope(method="GET", content_type="", length=None)))
    assert status == 200


@pytest.mark.parametrize("status,content_type,body,expected", [
    (400, "application/json", b'{"detail": [{"loc": ["pixels"], "msg": "bad", "type": "x"}]}',
     {"error": "pixels: bad", "detail": [{"loc": ["pixels"], "msg": "bad", "type": "x"}]}),
    (400, "application/json", b'[{"error": "one sentence"}]', {"error": "one sentence"}),
    (404, "text/plain", b"Not Found", {"error": "Not Found"}),
    (500, "text/plain", b"", {"error": "HTTP 500"}),
])
def test_error_shape_rewrites_every_error_body(status, content_type, body, expected):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type.encode())]})
        await send({"type": "http.response.body", "body": body})

    got_status, headers, got = asyncio.run(call(ErrorShape(app), scope(method="GET")))
    assert got_status == status and headers["content-type"] == "application/json"
    assert json.loads(got) == expected and headers["content-length"] == str(len(got))


def test_refusals_keep_the_connection_but_unread_oversized_or_stalled_bodies_close_it():
    """A 429 or 415 leaves the connection open (uvicorn discards the unread body): closing made every refused
    client of a flood reconnect. 413 and 408 close it: the client is still sending a body we will not read."""
    g, adm = guard(App(), admission=Admission(0.5, 1, max_requests=1, max_bytes=10_000))
    (status_429, headers_429, _), _ = asyncio.run(refused_while_one_is_held(g, adm))
    _, headers_415, _ = asyncio.run(call(guard(App())[0], scope(content_type="text/plain")))
    _, headers_413, _ = asyncio.run(call(guard(App(), max_body=1)[0], scope(length=2)))
    status_408, headers_408, _ = asyncio.run(call(guard(App(), body_timeout=0.05)[0], scope(length=2),
                                                  chunks=(b"{", b"}"), held=asyncio.Event()))  # stops after "{"
    assert (status_429, status_408) == (429, 408)
    assert "connection" not in headers_429 and "connection" not in headers_415
    assert headers_413["connection"] == "close" and headers_408["connection"] == "close"
