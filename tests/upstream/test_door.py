"""service/upstream/door.py: refusals answered by uvicorn's protocol before the ASGI stack, tickets handed on and released; and what it relies on upstream."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
import uvicorn.config
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


async def settled(protocol, within: float = 5.0) -> None:
    """Wait until every ASGI task the connection started (pipelined ones included) has ended."""
    deadline = asyncio.get_running_loop().time() + within
    while protocol.tasks:
        assert asyncio.get_running_loop().time() < deadline, "requests still running"
        await asyncio.wait(list(protocol.tasks), timeout=within)
        await asyncio.sleep(0)  # their done callbacks (uvicorn discards them) and the next pipelined start


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
        await settled(protocol)
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
        await settled(protocol)
        return responses(transport.written), app

    answers, app = asyncio.run(run())
    assert [s for s, _, _ in answers] == [429, 200] and len(app.scopes) == 1


def test_an_admitted_request_carries_its_ticket_and_it_is_released_when_the_task_ends(connection):
    async def run():
        admission = Admission(0.5, 4, 10, 10_000)
        protocol, transport, app = await connection(admission)
        protocol.data_received(POST)
        held_while_running = admission.held
        await settled(protocol)
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
        await settled(protocol)
        protocol.data_received(POST)  # 18 bytes declared > 10: Guard's 413, so no ticket here
        await settled(protocol)
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
            await asyncio.sleep(0)  # a loop turn: the running request reads what came (no state waited for)
        await settled(protocol)
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
        await settled(protocol)
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
        await settled(protocol)
        return responses(transport.written), protocol

    answers, protocol = asyncio.run(run())
    assert [s for s, _, _ in answers] == [401, 429]
    assert answers[0][1]["www-authenticate"].startswith("bearer") and "bearer token" in json.loads(answers[0][2])["error"]
    assert ("count", "/temperature", 401) in protocol.metrics.calls


# What the door relies on upstream: each canary runs uvicorn's or BentoML's code without the patch, and fails when
# they change it; its docstring says what a failure means.


def test_install_makes_door_and_asyncio_what_uvicorn_auto_loads(bentoml_worker):
    """install() and use_asyncio_loop() replace uvicorn's "auto" HTTP protocol and event loop, which a Config uses when
    given none: the Config BentoML's worker makes names none (but on Windows, where it asks for asyncio), and loaded
    it gives Door and asyncio's loop.

    If this fails, BentoML's worker names a protocol or loop of its own: the door is never used (find where to hook in
    instead), or it chose asyncio itself (delete use_asyncio_loop)."""
    before = uvicorn.config.HTTP_PROTOCOLS["auto"], uvicorn.config.LOOP_FACTORIES["auto"]
    held = socket.create_server(("127.0.0.1", 0))
    try:
        run = bentoml_worker(held, "--ssl-version", "2", "--ssl-cert-reqs", "0", "--ssl-ciphers", "TLSv1")
        (config,) = run.configs  # every option that adds to uvicorn's Config given: still no protocol or loop
        assert (config.http, config.loop) == ("auto", "auto")
        admission = Admission(0.5, 4, 1, 10_000)
        door.install(admission, 123)
        door.use_asyncio_loop()
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
        held.close()


def test_uvicorn_s_auto_loop_is_uvloop_when_it_is_installed():
    """What use_asyncio_loop works around: wherever uvloop is installed (the dev venv has it; the serving requirements
    do not), uvicorn's "auto" loop is uvloop's, and libuv accepts one connection per loop iteration.

    If this fails, uvicorn's "auto" no longer picks uvloop: delete use_asyncio_loop (and the asyncio-loop patch)."""
    pytest.importorskip("uvloop")
    from uvicorn.importer import import_from_string

    loop = import_from_string(door.UPSTREAM_AUTO_LOOP)()()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()


class Starts(HttpToolsProtocol):
    """uvicorn's httptools protocol, unpatched, recording each _start_asgi_task call and what had arrived by then."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.starts: list[tuple] = []

    def _start_asgi_task(self, cycle, app):
        self.starts.append((cycle.scope["method"], cycle.scope["path"], bytes(cycle.body), app is self.app))
        super()._start_asgi_task(cycle, app)


async def upstream_protocol(cls: type) -> tuple[HttpToolsProtocol, Transport]:
    config = uvicorn.config.Config(App(), http=cls, lifespan="off", log_config=None)
    config.load()
    protocol = cls(config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop())
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport


def test_uvicorn_starts_each_request_through_start_asgi_task_once_its_headers_are_parsed():
    """Door answers in ``_start_asgi_task(cycle, app)``: uvicorn must call it once per request, pipelined ones too,
    once the head is parsed and before the body arrives, with the app it would run.

    If this fails, uvicorn starts requests another way: a refused request would reach the ASGI stack (or hang); find
    the new place before trusting the door. The door can go once uvicorn offers a hook before the ASGI task (and a
    head limit for httptools)."""

    async def run():
        protocol, transport = await upstream_protocol(Starts)
        head, body = POST.split(b"\r\n\r\n")
        protocol.data_received(head + b"\r\n\r\n")
        started_before_body = list(protocol.starts)
        protocol.data_received(body)
        await settled(protocol)
        protocol.data_received(GET + GET)  # pipelined: the second starts once the first is answered
        await settled(protocol)
        return started_before_body, protocol.starts, transport

    before_body, starts, transport = asyncio.run(run())
    assert before_body == [("POST", "/temperature", b"", True)]
    assert starts == [("POST", "/temperature", b"", True), ("GET", "/readyz", b"", True), ("GET", "/readyz", b"", True)]
    assert [s for s, _, _ in responses(transport.written)] == [200, 200, 200]


class Answers(HttpToolsProtocol):
    """uvicorn's httptools protocol, unpatched, answering 429 in _start_asgi_task without an ASGI task, as Door does."""

    def _start_asgi_task(self, cycle, app):
        if cycle.scope["method"] == "GET":
            return super()._start_asgi_task(cycle, app)
        self.transport.write(b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\n\r\n")
        cycle.response_complete = True
        self.on_response_complete()


def test_uvicorn_discards_the_body_of_a_request_answered_before_its_task():
    """Door answers a refused request without reading its body, keeping the connection: uvicorn must skip the body of
    a request whose response is complete, however it arrives, and parse what follows as the next request.

    If this fails, the bytes of a refused body would be read as the next request (a 400 and a closed connection): Door
    must read or skip the body itself, or close the connection after each refusal. (Nothing to delete: this is what
    the door relies on.)"""

    async def run():
        protocol, transport = await upstream_protocol(Answers)
        head, body = POST.split(b"\r\n\r\n")
        protocol.data_received(head + b"\r\n\r\n")
        cycle = protocol.cycle
        protocol.data_received(body)  # after the answer
        protocol.data_received(POST + GET)  # the body with the head, and a request after it
        await settled(protocol)
        return cycle, transport, protocol.config.app  # the App (loaded_app wraps it)

    cycle, transport, app = asyncio.run(run())
    assert cycle.body == b"" and not transport.closed
    assert [s for s, _, _ in responses(transport.written)] == [429, 429, 200] and len(app.scopes) == 1


def test_uvicorn_s_httptools_protocol_sets_no_limit_on_a_request_s_head():
    """What Door's 431 adds: uvicorn's httptools protocol reads a head of any size and hands it to the app.

    If this fails, uvicorn (or httptools) limits heads itself: Door's max_header_bytes check could go (keep the
    setting's documented answer)."""

    async def run():
        protocol, transport = await upstream_protocol(Starts)
        protocol.data_received(b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n")
        await settled(protocol)
        return protocol.starts, transport

    starts, transport = asyncio.run(run())
    assert starts == [("GET", "/readyz", b"", True)] and responses(transport.written)[0][0] == 200
