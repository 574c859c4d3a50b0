"""Guards for service/fastpath.py: the BentoML overheads it removes must still exist upstream (else delete that patch), and the patches must not change answers."""

import asyncio
import inspect
import threading

import anyio.to_thread
import pytest

from service import fastpath


@pytest.fixture(scope="module")
def service():
    from service.service import ThermoDigits

    return ThermoDigits


@pytest.fixture()
def schema_calls(service, monkeypatch):
    """Count model_json_schema() calls on the /digits output class (a root model: a list)."""
    cls = service.apis["digits"].output_spec
    calls = []
    upstream = cls.model_json_schema.__func__

    def counting(c, *args, **kwargs):
        calls.append(c)
        return upstream(c, *args, **kwargs)

    monkeypatch.setattr(cls, "model_json_schema", classmethod(counting))
    fastpath._mime_types.pop(cls, None)
    return cls, calls


def test_upstream_mime_type_still_rebuilds_the_json_schema_each_call(schema_calls):
    """If this fails, BentoML no longer regenerates the schema per response: delete fastpath._mime_type."""
    cls, calls = schema_calls
    fastpath._upstream_mime_type(cls)
    fastpath._upstream_mime_type(cls)
    assert len(calls) == 2


def test_patched_mime_type_builds_the_schema_once(schema_calls):
    cls, calls = schema_calls
    assert [cls.mime_type() for _ in range(3)] == ["application/json"] * 3
    assert len(calls) == 1


def test_patched_mime_type_answers_what_upstream_does(service):
    specs = [s for api in service.apis.values() for s in (api.input_spec, api.output_spec)]
    assert [s.mime_type() for s in specs] == [fastpath._upstream_mime_type(s) for s in specs]


def test_mime_type_cache_follows_a_later_media_type(service, monkeypatch):
    cls = service.apis["digits"].output_spec
    cls.mime_type()
    monkeypatch.setattr(cls, "media_type", "text/event-stream")
    assert cls.mime_type() == "text/event-stream"


def middleware_classes(service, middlewares_property) -> list[type]:
    from _bentoml_impl.server.app import ServiceAppFactory

    service.inject_config()  # what Service.to_asgi() does first
    return [m.cls for m in middlewares_property.fget(ServiceAppFactory(service, is_main=True))]


def test_upstream_still_adds_opentelemetry_without_tracing_configured(service):
    """If this fails, BentoML made its tracing middleware optional: delete fastpath._middlewares and RequestId."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    assert not fastpath.tracing_configured()
    assert OpenTelemetryMiddleware in middleware_classes(service, fastpath._upstream_middlewares)


def test_without_tracing_opentelemetry_is_replaced_by_a_request_id(service):
    from _bentoml_impl.server.app import ServiceAppFactory
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    classes = middleware_classes(service, ServiceAppFactory.middlewares)
    assert OpenTelemetryMiddleware not in classes and fastpath.RequestId in classes
    upstream = middleware_classes(service, fastpath._upstream_middlewares)
    assert len(classes) == len(upstream)  # nothing else added or lost


def test_with_tracing_configured_opentelemetry_stays(service, monkeypatch):
    from _bentoml_impl.server.app import ServiceAppFactory
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    monkeypatch.setattr(fastpath, "tracing_configured", lambda: True)
    assert OpenTelemetryMiddleware in middleware_classes(service, ServiceAppFactory.middlewares)


def test_responses_still_carry_a_fresh_request_id(client):
    ids = {client.post("/temperature", json={"readings": [35.7]}).headers["x-bentoml-request-id"] for _ in range(3)}
    assert len(ids) == 3 and all(len(i) == 16 for i in ids)


def test_upstream_still_runs_sync_endpoints_in_a_thread():
    """If this fails, BentoML changed how sync endpoints run: re-check fastpath._to_thread (and @inline)."""
    from _bentoml_impl.server.app import ServiceAppFactory

    assert "self._to_thread(func, *call_args, **call_kwargs)" in inspect.getsource(ServiceAppFactory.api_endpoint)

    class Factory:
        _limiter = None
        service = type("S", (), {"config": {}})()

    ran_in = asyncio.run(fastpath._upstream_to_thread(Factory(), threading.get_ident))
    assert ran_in != threading.get_ident()


def test_inline_endpoints_skip_the_thread_and_others_keep_it(client, monkeypatch):
    hops = []
    upstream = anyio.to_thread.run_sync

    async def counting(func, *args, **kwargs):
        hops.append(func)
        return await upstream(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    assert client.post("/temperature", json={"readings": [35.7]}).status_code == 200
    assert client.post("/digit", json={"pixels": [[0] * 28] * 28}).status_code == 200
    assert client.post("/digits", json={"images": [[[0] * 28] * 28]}).status_code == 200
    assert hops == []
    r = client.post("/digit/image", files={"image": ("d.png", _png(), "image/png")})
    assert r.status_code == 200 and len(hops) >= 1  # uploads can take long to decode: still a thread


def test_inline_keeps_the_method_a_plain_sync_call(service):
    svc = service()
    result = svc.temperature(readings=[35.7])
    assert result.model == "temperature-linear"


def test_upstream_still_builds_a_new_endpoint_wrapper_per_access(service):
    """If this fails, BentoML caches the wrapper itself: delete fastpath._local_call."""
    svc = service()
    method = service.apis["temperature"]
    assert fastpath._upstream_local_call(method, svc) is not fastpath._upstream_local_call(method, svc)


def test_endpoint_wrapper_is_built_once_per_instance_and_behaves_the_same(service):
    a, b = service(), service()
    assert a.temperature.local is a.temperature.local
    assert a.temperature.local is not b.temperature.local
    assert a.digit.local is not a.temperature.local
    assert a.temperature.local(readings=[35.7]) == fastpath._upstream_local_call(service.apis["temperature"], a)(readings=[35.7])


def run_timeout_middleware(call, app, timeout: float) -> tuple[list, list]:
    """Send one request through TimeoutMiddleware on a fresh loop; return (messages sent, live timers left)."""
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    middleware = TimeoutMiddleware(app, timeout=timeout)
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def main():
        await call(middleware, {"type": "http", "path": "/", "method": "GET", "headers": []}, receive, send)
        loop = asyncio.get_running_loop()
        return [h for h in loop._scheduled if not h.cancelled()]

    return sent, asyncio.run(main())


async def answer(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_upstream_timeout_middleware_still_leaves_its_timer_armed():
    """If this fails, BentoML cancels the per-request timer itself: delete fastpath._timeout_call."""
    sent, timers = run_timeout_middleware(fastpath._upstream_timeout_call, answer, timeout=30)
    assert sent[0]["status"] == 200
    assert len(timers) == 1


def test_patched_timeout_middleware_cancels_its_timer():
    sent, timers = run_timeout_middleware(fastpath._timeout_call, answer, timeout=30)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"] and timers == []


def test_patched_timeout_middleware_still_answers_504_in_time():
    async def slow(scope, receive, send):
        await asyncio.sleep(5)

    for call in (fastpath._upstream_timeout_call, fastpath._timeout_call):
        sent, _ = run_timeout_middleware(call, slow, timeout=0.05)
        assert sent[0]["status"] == 504
        assert b"Not able to process the request in 0.05 seconds" in sent[1]["body"]


def test_install_is_idempotent(service):
    from _bentoml_impl.server.app import ServiceAppFactory

    fastpath.install()
    fastpath.install()
    assert ServiceAppFactory._to_thread is fastpath._to_thread
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    assert TimeoutMiddleware.__call__ is fastpath._timeout_call
    assert ServiceAppFactory.middlewares.fget is fastpath._middlewares


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (28, 28)).save(buf, "PNG")
    return buf.getvalue()
