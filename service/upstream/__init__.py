"""Everything that reaches into BentoML's, uvicorn's or CPython's internals, installed by one call of ``install()``; the rest of service/ uses public API only.

Each patch, what it changes (pinned versions: bentoml 1.4.40, uvicorn 0.54.0, CPython 3.11-3.13), why,
and the test that fails when upstream changes what it relies on (tests/upstream/). Benefits are measured
A/B with ``python -m harness.ab --skip NAME`` (the same server with and without it, alternating, one
run); the figures and the commands are in docs/decisions/upstream-patches.md. A patch whose benefit
cannot be told from noise is removed. Delete a patch when its test says upstream fixed the cause.

| patch | upstream target | why |
| --- | --- | --- |
| ``door`` | ``uvicorn.config.HTTP_PROTOCOLS["auto"]`` (subclass overriding ``HttpToolsProtocol._start_asgi_task`` and ``data_received``); BentoML's metrics and access-log middlewares subclassed | refusals (429, 401) cost half as much when written before the ASGI stack; uvicorn's httptools protocol has no limit on a request's head (431) |
| ``asyncio-loop`` | ``uvicorn.config.LOOP_FACTORIES["auto"]`` | uvloop accepts one connection per loop turn: bursts of connections waited seconds |
| ``deadline`` | ``ServiceAppFactory.middlewares``: ``TimeoutMiddleware`` out, its ``traffic.timeout`` to the guard | its uncancelled timers kept every request alive for 30 s; its 504 was outside the error shape |
| ``request-id`` | ``ServiceAppFactory.middlewares``: ``OpenTelemetryMiddleware`` -> ``RequestId`` when no tracing is configured | spans made for every request and never exported |
| ``endpoint-wrapper-cache`` | ``_bentoml_sdk.method.APIMethod._local_call`` | a new wrapper (``inspect.signature``) per request |
| ``gc`` | ``gc.freeze()``, ``gc.set_threshold`` | full collections scanning every live request in a flood |
| ``multipart`` | ``_bentoml_impl.serde.MultipartSerde.parse_request`` | 500s for malformed multipart bodies and binary parts under a wrong name; a text part fetched as a URL |
| ``openapi`` | ``_bentoml_sdk.service.factory.Service.openapi_spec`` (property) | /docs.json not valid OpenAPI 3.0, errors misdescribed |
| (read) | ``_bentoml_impl/server/main-openapi.html`` (service/upstream/swagger.py) | BentoML's Swagger page loads Google Tag Manager |

The patches in ``SKIPPABLE`` can be left out with ``SERVICE_SKIP_PATCHES`` (for A/B measurement only);
the others change what the service answers, not how fast.
"""

from __future__ import annotations

from typing import Any

from service.api.admission import Admission
from service.api.auth import Tokens
from service.settings import Settings
from service.upstream import bentoml_app, door, gc_tuning, multipart, openapi

# In the order install() applies them.
SKIPPABLE = ("door", "asyncio-loop", "deadline", "request-id", "endpoint-wrapper-cache", "gc")
_skipped: frozenset[str] = frozenset()


def install(service: Any, admission: Admission, tokens: Tokens | None, settings: Settings) -> None:
    """Apply every patch (but those in settings.skip_patches), once per process, before the worker builds its app and server."""
    global _skipped
    skip = _skipped = frozenset(filter(None, (name.strip() for name in settings.skip_patches.split(","))))
    if unknown := skip - set(SKIPPABLE):
        raise ValueError(f"SERVICE_SKIP_PATCHES={settings.skip_patches!r}: {', '.join(sorted(unknown))} is not one of "
                         f"{', '.join(SKIPPABLE)}")
    multipart.install()
    openapi.install(service)
    if "door" not in skip:
        door.install(admission, settings.max_body_bytes, tokens, settings.max_header_bytes)
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
