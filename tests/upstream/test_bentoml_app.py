"""Canaries for service/upstream/bentoml_app.py: the BentoML overheads it removes must still exist upstream (else delete that patch), and the patches must not change answers."""

import asyncio

import pytest

from service.api.guard import Guard
from service.upstream import bentoml_app


@pytest.fixture(scope="module")
def service():
    from service.service import ThermoDigits

    return ThermoDigits


def middleware_classes(service, middlewares_property) -> list[type]:
    from _bentoml_impl.server.app import ServiceAppFactory

    service.inject_config()  # what Service.to_asgi() does first
    return [m.cls for m in middlewares_property.fget(ServiceAppFactory(service, is_main=True))]


def test_upstream_still_adds_opentelemetry_without_tracing_configured(service):
    """If this fails, BentoML made its tracing middleware optional: delete the request-id change and RequestId."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    assert not bentoml_app.tracing_configured()
    assert OpenTelemetryMiddleware in middleware_classes(service, bentoml_app.UPSTREAM_MIDDLEWARES)


def test_without_tracing_opentelemetry_is_replaced_by_a_request_id(service):
    from _bentoml_impl.server.app import ServiceAppFactory
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    classes = middleware_classes(service, ServiceAppFactory.middlewares)
    assert OpenTelemetryMiddleware not in classes and bentoml_app.RequestId in classes
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    upstream = middleware_classes(service, bentoml_app.UPSTREAM_MIDDLEWARES)
    assert len(classes) == len(upstream) - 1 and TimeoutMiddleware not in classes  # nothing else added or lost


def test_with_tracing_configured_opentelemetry_stays(service, monkeypatch):
    from _bentoml_impl.server.app import ServiceAppFactory
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    monkeypatch.setattr(bentoml_app, "tracing_configured", lambda: True)
    assert OpenTelemetryMiddleware in middleware_classes(service, ServiceAppFactory.middlewares)


def test_responses_still_carry_a_fresh_request_id(client):
    ids = {client.post("/temperature", json={"readings": [35.7]}).headers["x-bentoml-request-id"] for _ in range(3)}
    assert len(ids) == 3 and all(len(i) == 16 for i in ids)


def test_upstream_still_requires_a_timeout_and_adds_its_timeout_middleware(service):
    """If this fails, BentoML made traffic.timeout optional: drop it instead of removing its middleware."""
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    assert TimeoutMiddleware in middleware_classes(service, bentoml_app.UPSTREAM_MIDDLEWARES)


def test_upstream_timeout_middleware_still_leaves_its_timer_armed():
    """If this fails, BentoML cancels its per-request timer: its middleware could stay (and own the deadline)."""
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    async def answer(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def main():
        async def nothing(message):
            pass

        await TimeoutMiddleware(answer, timeout=30)({"type": "http", "path": "/", "headers": []}, None, nothing)
        return [h for h in asyncio.get_running_loop()._scheduled if not h.cancelled()]

    assert len(asyncio.run(main())) == 1


def test_the_stack_is_in_the_stated_order_and_guard_owns_the_deadline(client):
    stack, app = [], client.app.middleware_stack.app  # below Starlette's ServerErrorMiddleware
    while type(app).__name__ != "ExceptionMiddleware":
        stack.append(type(app))
        if isinstance(app, Guard):
            assert app.timeout == 30  # traffic.timeout of @bentoml.service in service/service.py
        app = app.app
    assert tuple(stack) == bentoml_app.stack()


def test_each_stack_change_installs_alone(service):
    from _bentoml_impl.server.app import ServiceAppFactory
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    try:
        for change in bentoml_app.STACK_CHANGES:
            bentoml_app.middleware_stack({change})
            classes = middleware_classes(service, ServiceAppFactory.middlewares)
            upstream = middleware_classes(service, bentoml_app.UPSTREAM_MIDDLEWARES)
            expected = [c for c in bentoml_app.stack({change}) if c in classes or c in upstream]
            assert [c for c in classes if c in expected] == expected, change
            assert (TimeoutMiddleware in classes) == (change != "deadline")
        with pytest.raises(ValueError, match="unknown middleware stack changes: tracing"):
            bentoml_app.middleware_stack({"tracing"})
    finally:
        bentoml_app.middleware_stack(set(bentoml_app.STACK_CHANGES))
