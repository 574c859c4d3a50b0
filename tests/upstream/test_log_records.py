"""Canaries for service/upstream/log_records.py: BentoML's worker format must still print none of the costly fields, and lines must read the same."""

import os

import pytest

from service.upstream import log_records


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
    assert formats and not any(log_records.COSTLY_FIELD.search(fmt) for fmt in formats)


def test_lightened_records_skip_the_stack_walk_and_bentoml_lines_read_the_same(logging_flags):
    import io
    import logging

    from bentoml._internal.log import SERVER_LOGGING_CONFIG

    config = SERVER_LOGGING_CONFIG["formatters"]["traced"]
    formatter = logging.Formatter(config["format"], config["datefmt"])

    def line() -> tuple[str, logging.LogRecord]:
        stream, logger = io.StringIO(), logging.getLogger("test.log_records.lighten")
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
    assert log_records.lighten_log_records(("test.log_records.lighten",))
    after, record = line()
    assert after == before and "status=429" in after
    assert record.lineno == 0 and record.funcName == "(unknown function)" and record.thread is None
    assert record.process is None


@pytest.mark.parametrize("fmt", ["%(asctime)s %(filename)s:%(lineno)d %(message)s", "{threadName} {message}"])
def test_records_stay_whole_when_a_handler_prints_a_costly_field(logging_flags, fmt):
    import logging

    logger, handler = logging.getLogger("test.log_records.keep"), logging.StreamHandler()
    handler.setFormatter(logging.Formatter(fmt, style=fmt[0]))
    logger.addHandler(handler)
    try:
        srcfile = logging._srcfile
        assert srcfile is not None and not log_records.lighten_log_records(("test.log_records.keep",))
        assert logging._srcfile is srcfile and logging.logThreads
    finally:
        logger.removeHandler(handler)
