"""service/payload_log.py: off by default, a sampled share of requests logged through bentoml.monitor as one JSON line per row, in files that rotate and are kept a set number of days."""

import json
import logging.handlers

import numpy as np

import artifacts
from service.inference.runtime import LoadedModel
from service.inference.versions import Version
from service.payload_log import PayloadLog
from service.settings import Settings


def digit_version() -> Version:
    model = artifacts.model(artifacts.MNIST)
    return Version(model, LoadedModel(model.name, "a" * 16, {}, "onnx", "cpu", lambda x: x))


def lines(folder) -> list[dict]:
    found = sorted((folder / "predictions" / "data").glob("data.*.log"))
    return [json.loads(line) for path in found for line in path.read_text().splitlines()]


def test_off_by_default_and_nothing_written(tmp_path):
    assert Settings().payload_share == 0
    PayloadLog(0.0, tmp_path / "logs", 7).log(digit_version(), "default", np.zeros((1, 784)), np.zeros((1, 10)))
    assert not (tmp_path / "logs").exists()


def test_a_logged_request_writes_one_line_per_row_and_no_header(tmp_path):
    draws = iter([0.05, 0.5, 0.05])  # share 0.1: the first and third requests are logged
    payloads = PayloadLog(0.1, tmp_path / "logs", 3, draw=lambda: next(draws))
    y = np.full((2, 10), 0.02)
    y[:, 7] = 0.82
    for _ in range(3):
        payloads.log(digit_version(), "canary", np.ones((2, 1, 28, 28)) * 0.5, y)
    for handler in logging.getLogger("bentoml_monitor_data").handlers:
        handler.flush()
    rows = lines(tmp_path / "logs")
    assert len(rows) == 4
    row = rows[0]
    assert (row["model"], row["version"], row["route"], row["digit"]) == ("mnist-fc", "a" * 16, "canary", 7)
    assert len(row["inputs"]) == 784 and row["outputs"][7] == 0.82 and abs(row["confidence"] - 0.82) < 1e-9
    assert not any("authorization" in key.lower() for key in row)
    handler = next(h for h in logging.getLogger("bentoml_monitor_data").handlers
                   if isinstance(h, logging.handlers.TimedRotatingFileHandler))
    assert (handler.when, handler.backupCount) == ("MIDNIGHT", 3)
