"""service/upstream/door.py: refusals answered by uvicorn's protocol before the ASGI stack, tickets handed on and released; and what it relies on upstream."""

from __future__ import annotations

import asyncio
import inspect
import json
import re

import pytest
import uvicorn.config
from _bentoml_impl.worker import service as bentoml_worker
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from service.upstream import door
from service.core.admission import Admission, Ticket
from service.upstream.door import Door
from service.api.guard import TICKET

POST = (b"POST /temperature HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 18\r\n\r\n{\"readings\": [1]}\n")
GET = b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"


class Transport:
    """What uvicorn's protocol uses of an asyncio transport; keeps what was written."""

    def __init__(self):
        self.written, self.closed = b"", False

    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 3000), "peername": ("127.0.0.1", 5555)}.get(name, default)

    def write(self, data):
        self.written += data

    def close(self):
        self.closed = True

    def is_closing(self):
        return self.closed

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


class App:
    """Answers 200 with the body it received, and records each scope."""

    def __init__(self):
        self.scopes: list[dict] = []

    async def __call__(self, scope, receive, send):
        self.scopes.append(scope)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})


class Recorder:
    """Stands in for the Metrics and AccessLog middlewares: what the door asked them to record."""

    skip_paths = ("/livez",)

    def __init__(self):
        self.calls: list[tuple] = []

    def count(self, endpoint, status, seconds):
        self.calls.append(("count", endpoint, status))

    def write(self, scope, status, length, seconds):
        self.calls.append(("write", scope["path"], status, length))


@pytest.fixture
def connection():
    """A Door (its own subclass, so tests do not share class state) on a fake transport, with a fresh Admission."""

    async def make(admission: Admission, max_body: int = 1000, max_header: int = 0, tokens=None):
        cls = type("TestDoor", (Door,), {"admission": admission, "max_body_bytes": max_body, "max_header_bytes": max_header,
                                         "auth": tokens, "metrics": Recorder(), "access": Recorder()})
        app = App()
        config = uvicorn.config.Config(app, http=cls, lifespan="off", log_config=None)
        config.load()
        protocol = cls(config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop())
        transport = Transport()
        protocol.connection_made(transport)
        return protocol, transport, app

    return make


def full() -> tuple[Admission, Ticket]:
    """An Admission whose one place (max_requests=1) is held by the ticket returned."""
    admission = Admission(0.5, 4, 1, 10_000)
    return admission, admission.admit(0)


def responses(written: bytes) -> list[tuple[int, dict, bytes]]:
    out, rest = [], written
    while rest:
        head, _, rest = rest.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        n = int(headers["content-length"])
        out.append((int(lines[0].split()[1]), headers, rest[:n]))
        rest = rest[n:]
    return out


def test_a_refused_request_gets_429_in_the_error_shape_and_the_connection_serves_the_next(connection):
    async def run():
        admission, holder = full()
        protocol, transport, app = await connection(admission)
        protocol.data_received(POST)
        refused = responses(transport.written)
        admission.finish(holder, served=False)
        protocol.data_received(POST)  # same connection, now admitted
        await asyncio.sleep(0.05)
        return refused, responses(transport.written), transport, app, protocol

    refused, both, transport, app, protocol = asyncio.run(run())
    (status, headers, body), = refused
    assert status == 429 and headers["retry-after"] == "1" and headers["content-type"] == "application/json"
    assert "limit 1" in json.loads(body)["error"] and "connection" not in headers
    assert [s for s, _, _ in both] == [429, 200] and both[1][2] == b'{"readings": [1]}\n'
    assert len(app.scopes) == 1 and not transport.closed  # the refusal never became an ASGI task
    assert protocol.metrics.calls == [("count", "/temperature", 429)]
    assert protocol.access.calls == [("write", "/temperature", 429, len(body))]


def test_the_body_of_a_refused_request_is_skipped_even_when_it_arrives_later(connection):
    async def run():
        admission, holder = full()
        protocol, transport, app = await connection(admission)
        head, body = POST.split(b"\r\n\r\n")
        protocol.data_received(head + b"\r\n\r\n")
        protocol.data_received(body)  # parsed as the refused request's body, not a new request
        admission.finish(holder, served=False)
        protocol.data_received(POST)
        await asyncio.sleep(0.05)
        return responses(transport.written), app

    answers, app = asyncio.run(run())
    assert [s for s, _, _ in answers] == [429, 200] and len(app.scopes) == 1


def test_an_admitted_request_carries_its_ticket_and_it_is_released_when_the_task_ends(connection):
    async def run():
        admission = Admission(0.5, 4, 10, 10_000)
        protocol, transport, app = await connection(admission)
        protocol.data_received(POST)
        held_while_running = admission.held
        await asyncio.sleep(0.05)
        return admission, held_while_running, app, transport

    admission, held_while_running, app, transport = asyncio.run(run())
    ticket = app.scopes[0][TICKET]
    assert held_while_running == 1 and ticket.size == 18
    assert ticket.done and (admission.held, admission.bytes) == (0, 0)  # the app never called finish: the door did
    assert responses(transport.written)[0][0] == 200


def test_get_and_oversized_bodies_go_on_without_asking_admission(connection):
    async def run():
        admission, _ = full()
        protocol, transport, app = await connection(admission, max_body=10)
        protocol.data_received(GET)
        await asyncio.sleep(0.05)
        protocol.data_received(POST)  # 18 bytes declared > 10: Guard's 413, so no ticket here
        await asyncio.sleep(0.05)
        return app, transport

    app, transport = asyncio.run(run())
    assert [s["method"] for s in app.scopes] == ["GET", "POST"] and TICKET not in app.scopes[1]
    assert [s for s, _, _ in responses(transport.written)] == [200, 200]


def test_a_refusal_of_a_client_waiting_for_100_continue_closes_the_connection(connection):
    async def run():
        protocol, transport, app = await connection(full()[0])
        head, _ = POST.split(b"\r\n\r\n")
        protocol.data_received(head + b"\r\nExpect: 100-continue\r\n\r\n")
        return responses(transport.written), transport

    answers, transport = asyncio.run(run())
    assert answers[0][0] == 429 and answers[0][1]["connection"] == "close" and transport.closed


def test_a_failure_to_count_or_log_never_breaks_the_answered_connection(connection):
    class Broken(Recorder):
        def count(self, *args):
            raise ValueError("labels changed upstream")

    async def run():
        protocol, transport, app = await connection(full()[0])
        protocol.metrics = Broken()
        protocol.data_received(POST)
        return responses(transport.written), transport

    answers, transport = asyncio.run(run())
    assert [s for s, _, _ in answers] == [429] and not transport.closed


def post(body: bytes, path: bytes = b"/temperature", extra: bytes = b"") -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + extra +
            b"Content-Length: %d\r\n\r\n" % len(body) + body)


@pytest.mark.parametrize("chunks", [1, 3, 97])
def test_heads_within_the_limit_pass_however_the_bytes_arrive(connection, chunks):
    """Big bodies, several requests per chunk or a request split anywhere: only heads count."""
    async def run():
        protocol, transport, app = await connection(Admission(0.5, 4, 100, 10**9), max_body=10**7, max_header=1000)
        stream = post(b"x" * 50_000) + post(b"{}") + post(b"y" * 3000)
        size = -(-len(stream) // chunks)
        for i in range(0, len(stream), size):
            protocol.data_received(stream[i:i + size])
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        return responses(transport.written), transport

    answers, transport = asyncio.run(run())
    assert [s for s, _, _ in answers] == [200, 200, 200] and not transport.closed


@pytest.mark.parametrize("whole", [True, False])
def test_a_head_over_the_limit_is_431_and_the_connection_closed(connection, whole):
    async def run():
        protocol, transport, app = await connection(Admission(0.5, 4, 100, 10**9), max_header=1000)
        request = post(b"{}", extra=b"X-Big: " + b"a" * 2000 + b"\r\n")
        if whole:
            protocol.data_received(request)
        else:  # a head that never ends: refused once it is over the limit, before it is whole
            for i in range(0, 1500, 100):
                protocol.data_received(request[i:i + 100])
                if transport.closed:
                    break
        await asyncio.sleep(0.05)
        return transport, app

    transport, app = asyncio.run(run())
    assert transport.written.startswith(b"HTTP/1.1 431 ") and transport.closed and app.scopes == []


def test_a_missing_token_is_401_at_the_door_before_admission(connection):
    from service.core.auth import Access, Tokens

    async def run():
        admission, ticket = full()  # a worker that would refuse: the token is asked first
        protocol, transport, app = await connection(admission, tokens=Access(Tokens(["a-token-of-sixteen-chars"])))
        protocol.data_received(post(b"{}"))
        protocol.data_received(post(b"{}", extra=b"Authorization: Bearer a-token-of-sixteen-chars\r\n"))
        await asyncio.sleep(0.05)
        return responses(transport.written), protocol

    answers, protocol = asyncio.run(run())
    assert [s for s, _, _ in answers] == [401, 429]
    assert answers[0][1]["www-authenticate"].startswith("bearer") and "bearer token" in json.loads(answers[0][2])["error"]
    assert ("count", "/temperature", 401) in protocol.metrics.calls


# What the door relies on upstream: each fails when uvicorn or BentoML change it.

def test_install_makes_door_and_asyncio_what_uvicorn_auto_loads():
    before = uvicorn.config.HTTP_PROTOCOLS["auto"], uvicorn.config.LOOP_FACTORIES["auto"]
    try:
        admission = Admission(0.5, 4, 1, 10_000)
        door.install(admission, 123)
        door.use_asyncio_loop()
        config = uvicorn.config.Config(App(), lifespan="off", log_config=None)  # BentoML's call: no http=, loop=
        config.load()
        assert config.http_protocol_class is Door and (Door.admission, Door.max_body_bytes) == (admission, 123)
        loop = config.get_loop_factory()()  # what uvicorn.Server.run runs on
        try:
            assert type(loop).__module__.startswith("asyncio.") and "uvloop" not in type(loop).__module__
        finally:
            loop.close()
    finally:
        uvicorn.config.HTTP_PROTOCOLS["auto"], uvicorn.config.LOOP_FACTORIES["auto"] = before
        Door.admission = None


def test_bentoml_worker_leaves_uvicorn_on_its_auto_protocol():
    source = inspect.getsource(bentoml_worker.main.callback)  # main is a click command
    call = source[source.index("uvicorn.Config("):]
    assert "http=" not in call[:call.index("\n    )")]
    extra = set(re.findall(r'uvicorn_extra_options\["(\w+)"\]', source))
    assert extra == {"ssl_version", "ssl_cert_reqs", "ssl_ciphers", "loop"}


def test_uvicorn_still_starts_each_request_through_start_asgi_task():
    assert list(inspect.signature(HttpToolsProtocol._start_asgi_task).parameters) == ["self", "cycle", "app"]
    source = inspect.getsource(HttpToolsProtocol.on_headers_complete)
    assert "self._start_asgi_task(self.cycle, app)" in source
    assert "self.cycle.response_complete" in inspect.getsource(HttpToolsProtocol.on_body)
