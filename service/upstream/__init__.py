"""Everything that reaches into BentoML's, uvicorn's or CPython's internals, installed by one call of ``install()``; the rest of service/ uses public API only.

Pinned: bentoml 1.4.40, uvicorn 0.54.0, httptools 0.9.0, CPython 3.11-3.14. Benefits are B/A of ``python -m
harness.ab`` (the service without the patch over the service with it, alternating rounds, every round beyond
the 5 % the same host's A/A run spreads); the figures, the commands and the records:
docs/decisions/upstream-patches.md. A patch whose benefit cannot be told from noise is removed.

| patch | upstream target | why | measured benefit | test | delete when |
| --- | --- | --- | --- | --- | --- |
| ``reuseport`` | ``circus.sockets.CircusSocket.bind``/``listen`` (the API server's socket reserves the port, SO_REUSEPORT, no listen; a port something listens on stops the start); ``uvicorn.Server.startup`` (each worker listens on a socket of its own) | one shared socket gives each connection to whichever worker wins ``accept()``: whole rounds landed on one worker (BentoML #5426) | two workers: a round's least share 0-24 % -> 43-50 %; /temperature c=16 B/A 0.94, 0.53, 0.91, p99 1.13-1.43 | tests/upstream/test_arbiter.py, tests/upstream/test_uvicorn_server.py, tests/http/test_workers.py | BentoML gives each worker its own socket (PR #5557) or uvicorn a ``reuse_port`` |
| ``drain`` | ``uvicorn.Server.handle_exit``/``on_tick``/``shutdown``; ``HttpToolsProtocol._start_asgi_task``/``shutdown`` (via ``Door``'s base); ``circus.controller.SysHandler`` | SIGTERM closed the listener and idle keep-alive connections at once, and a second SIGTERM was ignored | SIGTERM under 32 clients: 26-33 requests lost -> 0 | tests/upstream/test_uvicorn_server.py, tests/upstream/test_arbiter.py, tests/http/test_drain.py | uvicorn drains on SIGTERM (a drain period, keep-alive off, no reset of queued connections) and BentoML forwards it |
| ``door`` | ``uvicorn.config.HTTP_PROTOCOLS["auto"]``: ``HttpToolsProtocol`` subclassed (``_start_asgi_task``, ``data_received``); BentoML's metrics and access-log middlewares subclassed | refusals (429, 401) written before the ASGI stack; uvicorn's httptools protocol has no limit on a request's head (431) | flood refusals p99 1.26-1.37x faster | tests/upstream/test_door.py | uvicorn offers a hook before the ASGI task and a head limit for httptools |
| ``asyncio-loop`` | ``uvicorn.config.LOOP_FACTORIES["auto"]`` | uvloop accepts one connection per loop turn | flood refusals max 53 ms instead of up to 456 ms | tests/upstream/test_door.py | libuv accepts a burst per turn (libuv PR #3696) |
| ``deadline`` | ``ServiceAppFactory.middlewares``: ``TimeoutMiddleware`` out, its ``traffic.timeout`` to the guard | its uncancelled timers kept every request alive for 30 s; its 504 was outside the error shape | /temperature p99 11-19x lower | tests/upstream/test_bentoml_app.py | BentoML cancels its timer |
| ``request-id`` | ``ServiceAppFactory.middlewares``: ``OpenTelemetryMiddleware`` -> ``RequestId`` without a tracing exporter | spans made for every request and never exported | /temperature 1.8x the answers | tests/upstream/test_bentoml_app.py | BentoML leaves tracing out when unconfigured |
| ``endpoint-wrapper-cache`` | ``_bentoml_sdk.method.APIMethod._local_call`` | a new wrapper (``inspect.signature``) per request | /temperature 1.10-1.15x the answers | tests/upstream/test_bentoml_app.py | BentoML caches the wrapper |
| ``gc`` | ``gc.freeze()``, ``gc.set_threshold`` | full collections scanning every live request in a flood | /temperature p99 5x lower; flood goodput 1.08-1.16x | tests/upstream/test_gc_tuning.py | CPython's collector changes (3.14's is incremental) |
| ``multipart`` | ``_bentoml_impl.serde.MultipartSerde.parse_request`` | 500s for malformed multipart bodies and binary parts under a wrong name; a text part fetched as a URL | correctness (400s) | tests/upstream/test_multipart.py | BentoML refuses these itself |
| ``openapi`` | ``_bentoml_sdk.service.factory.Service.openapi_spec`` (property) | /docs.json not valid OpenAPI 3.0, errors misdescribed | correctness | tests/upstream/test_openapi.py | BentoML generates valid 3.0 with the service's errors |
| (read) | ``_bentoml_impl/server/main-openapi.html`` (service/upstream/swagger.py) | BentoML's Swagger page loads Google Tag Manager | privacy | tests/browser/test_page.py | BentoML drops the tag manager |

Order, as ``install`` applies them: multipart and openapi (request parsing and the document), the supervisor's
socket and signals (before ``serve_http`` builds them), the worker's server and protocol, the door and the
loop (before uvicorn loads its config in the worker), the middleware stack changes and the wrapper cache
(before the worker builds its ASGI app); ``after_load`` tunes the collector once the models are loaded. The
patches in ``SKIPPABLE`` can be left out with ``SERVICE_SKIP_PATCHES`` (for A/B measurement only).
"""

from __future__ import annotations

from typing import Any

from service.core.admission import Admission
from service.core.auth import Access
from service.settings import Settings
from service.lifecycle import Drain
from service.upstream import arbiter, bentoml_app, door, gc_tuning, multipart, server

# In the order install() applies them.
SKIPPABLE = ("reuseport", "drain", "door", "asyncio-loop", "deadline", "request-id", "endpoint-wrapper-cache", "gc")
_skipped: frozenset[str] = frozenset()


def install(service: Any, admission: Admission, access: Access, settings: Settings, drain: Drain,
            beside: tuple[server.Beside, ...] = (), timeout: float | None = None) -> None:
    """Apply every patch (but those in settings.skip_patches), once per process, before the worker builds its app and
    server; the worker also runs the servers `beside` its HTTP one (the gRPC service)."""
    global _skipped
    skip = _skipped = frozenset(filter(None, (name.strip() for name in settings.skip_patches.split(","))))
    if unknown := skip - set(SKIPPABLE):
        raise ValueError(f"SERVICE_SKIP_PATCHES={settings.skip_patches!r}: {', '.join(sorted(unknown))} is not one of "
                         f"{', '.join(SKIPPABLE)}")
    multipart.install()
    if "reuseport" not in skip:
        arbiter.reserve_port({settings.grpc_port: "SERVICE_GRPC_PORT"} if settings.grpc_port else {})
    if "drain" not in skip:
        arbiter.signals()
    server.install(None if "drain" in skip else drain, beside)
    if "door" not in skip:
        door.install(admission, settings.max_body_bytes, access, settings.max_header_bytes, timeout)
    if "asyncio-loop" not in skip:
        door.use_asyncio_loop()
    changes = {"deadline", "request-id", "door-counters"} - skip
    if "door" in skip:
        changes.discard("door-counters")
    bentoml_app.middleware_stack(changes)
    if "endpoint-wrapper-cache" not in skip:
        bentoml_app.cache_endpoint_wrappers()


def after_load() -> None:
    """Call once the worker has loaded its models."""
    if "gc" not in _skipped:
        gc_tuning.tune()
