"""Guards for service/fastpath.py: the BentoML overheads it removes must still exist upstream (else delete that patch), and the patches must not change answers."""

import asyncio
import os

import pytest

from service import fastpath
from service.middleware import Guard


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
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    upstream = middleware_classes(service, fastpath._upstream_middlewares)
    assert len(classes) == len(upstream) - 1 and TimeoutMiddleware not in classes  # nothing else added or lost


def test_with_tracing_configured_opentelemetry_stays(service, monkeypatch):
    from _bentoml_impl.server.app import ServiceAppFactory
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    monkeypatch.setattr(fastpath, "tracing_configured", lambda: True)
    assert OpenTelemetryMiddleware in middleware_classes(service, ServiceAppFactory.middlewares)


def test_responses_still_carry_a_fresh_request_id(client):
    ids = {client.post("/temperature", json={"readings": [35.7]}).headers["x-bentoml-request-id"] for _ in range(3)}
    assert len(ids) == 3 and all(len(i) == 16 for i in ids)


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
    upstream = fastpath._upstream_local_call(service.apis["temperature"], a)
    assert asyncio.run(a.temperature.local(readings=[35.7])) == asyncio.run(upstream(readings=[35.7]))


def test_upstream_still_requires_a_timeout_and_adds_its_timeout_middleware(service):
    """If this fails, BentoML made traffic.timeout optional: drop it instead of removing its middleware."""
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    assert TimeoutMiddleware in middleware_classes(service, fastpath._upstream_middlewares)


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
    assert tuple(stack) == fastpath.MIDDLEWARE_ORDER


def test_install_is_idempotent(service):
    from _bentoml_impl.server.app import ServiceAppFactory
    from _bentoml_sdk.method import APIMethod

    fastpath.install()
    fastpath.install()
    assert ServiceAppFactory.middlewares.fget is fastpath._middlewares
    assert APIMethod._local_call is fastpath._local_call


@pytest.fixture()
def logging_flags(monkeypatch):
    """Python's defaults for what lighten_log_records changes (importing the service may have changed them), restored after."""
    import logging

    monkeypatch.setattr(logging, "_srcfile", os.path.normcase(logging.addLevelName.__code__.co_filename))
    for name in ("logThreads", "logProcesses", "logMultiprocessing", "logAsyncioTasks"):
        monkeypatch.setattr(logging, name, True, raising=False)
    return logging


def test_bentoml_worker_log_format_still_prints_none_of_the_costly_fields():
    """If this fails, BentoML's worker log prints a caller/thread/process field: lighten_log_records now keeps them."""
    from bentoml._internal.log import SERVER_LOGGING_CONFIG

    formats = [f["format"] for f in SERVER_LOGGING_CONFIG["formatters"].values()]
    assert formats and not any(fastpath.COSTLY_FIELD.search(fmt) for fmt in formats)


def test_lightened_records_skip_the_stack_walk_and_bentoml_lines_read_the_same(logging_flags):
    import io
    import logging

    from bentoml._internal.log import SERVER_LOGGING_CONFIG

    config = SERVER_LOGGING_CONFIG["formatters"]["traced"]
    formatter = logging.Formatter(config["format"], config["datefmt"])

    def line() -> tuple[str, logging.LogRecord]:
        stream, logger = io.StringIO(), logging.getLogger("test.fastpath.lighten")
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        handler.addFilter(SERVER_LOGGING_CONFIG["filters"]["tracing"]["()"]())
        records = []
        handler.addFilter(lambda r: records.append(r) or True)
        logger.addHandler(handler)
        try:
            logger.warning("%s (%s) %.3fms", "127.0.0.1:5555", "status=429", 0.008)
        finally:
            logger.removeHandler(handler)
        return stream.getvalue()[25:], records[0]  # without the time stamp

    before, record = line()
    assert record.lineno > 0 and record.thread is not None
    assert fastpath.lighten_log_records(("test.fastpath.lighten",))
    after, record = line()
    assert after == before and "status=429" in after
    assert record.lineno == 0 and record.funcName == "(unknown function)" and record.thread is None
    assert record.process is None


@pytest.mark.parametrize("fmt", ["%(asctime)s %(filename)s:%(lineno)d %(message)s", "{threadName} {message}"])
def test_records_stay_whole_when_a_handler_prints_a_costly_field(logging_flags, fmt):
    import logging

    logger, handler = logging.getLogger("test.fastpath.keep"), logging.StreamHandler()
    handler.setFormatter(logging.Formatter(fmt, style=fmt[0]))
    logger.addHandler(handler)
    try:
        srcfile = logging._srcfile
        assert srcfile is not None and not fastpath.lighten_log_records(("test.fastpath.keep",))
        assert logging._srcfile is srcfile and logging.logThreads
    finally:
        logger.removeHandler(handler)


def test_install_lightens_log_records(service, monkeypatch):
    calls = []
    monkeypatch.setattr(fastpath, "lighten_log_records", lambda *a: calls.append(a) or True)
    fastpath.install()
    assert calls == [()]
