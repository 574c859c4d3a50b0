"""Sampled payload logging, off by default, through BentoML's ``bentoml.monitor``: for a share of the requests, each row's inputs and outputs with the model and version that answered, as JSON lines in rotating files, for offline analysis (docs/operations.md reads them with Evidently).

``SERVICE_PAYLOAD_SHARE`` (0: off) is the share of requests logged, drawn per request; a logged request's rows are
logged whole. BentoML's default monitor writes ``<dir>/predictions/data/data.<worker>.log`` (one JSON object per
row: ``model``, ``version``, ``route``, ``inputs``, ``outputs``, and for digit models ``digit`` and ``confidence``,
plus BentoML's ``timestamp`` and ``request_id``) and its schema beside it; the files rotate at midnight and
``SERVICE_PAYLOAD_KEEP_DAYS`` of them are kept (a logging configuration written here, BentoML's own with a
``backupCount``). No header is ever logged, so neither is a token.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Callable

import bentoml
import numpy as np

import artifacts
from service.inference.versions import Version

log = logging.getLogger("bentoml.service.thermodigits")

NAME = "predictions"
CONFIG = """\
version: 1
disable_existing_loggers: false
loggers:
  bentoml_monitor_data:
    level: INFO
    handlers: [bentoml_monitor_data]
    propagate: false
  bentoml_monitor_schema:
    level: INFO
    handlers: [bentoml_monitor_schema]
    propagate: false
handlers:
  bentoml_monitor_data:
    class: logging.handlers.TimedRotatingFileHandler
    level: INFO
    formatter: bentoml_json
    filename: '{{data_filename}}'
    when: midnight
    backupCount: {keep}
  bentoml_monitor_schema:
    class: logging.handlers.RotatingFileHandler
    level: INFO
    formatter: bentoml_json
    filename: '{{schema_filename}}'
formatters:
  bentoml_json:
    class: pythonjsonlogger.jsonlogger.JsonFormatter
    format: "()"
    validate: false
"""


class PayloadLog:
    """Logs `share` of the requests it is shown (``log``) under `directory`, keeping `keep_days` days of files."""

    def __init__(self, share: float, directory: Path, keep_days: int, draw: Callable[[], float] = random.random):
        self.share = share
        self.directory = Path(directory)
        self.draw = draw
        self.options: dict[str, str] | None = None
        if share > 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            config = self.directory / "logging.yaml"
            config.write_text(CONFIG.format(keep=keep_days))
            self.options = {"log_path": str(self.directory), "log_config_file": str(config)}

    def log(self, version: Version, route: str, x: np.ndarray, y: np.ndarray) -> None:
        """Log the request's rows when the draw says so (after its answer is computed; never fails it)."""
        if self.options is None or self.draw() >= self.share:
            return
        try:
            rows = len(x)
            with bentoml.monitor(NAME, monitor_class="default", monitor_options=self.options) as mon:
                mon.log_batch([version.name] * rows, "model", "feature", "categorical")
                mon.log_batch([version.version] * rows, "version", "feature", "categorical")
                mon.log_batch([route] * rows, "route", "feature", "categorical")
                mon.log_batch(x.reshape(rows, -1).tolist(), "inputs", "feature", "numerical_sequence")
                mon.log_batch(y.reshape(rows, -1).tolist(), "outputs", "prediction", "numerical_sequence")
                if version.task == artifacts.DIGITS:
                    mon.log_batch(y.argmax(axis=1).tolist(), "digit", "prediction", "categorical")
                    mon.log_batch(y.max(axis=1).tolist(), "confidence", "prediction", "numerical")
        except Exception:
            log.exception("a sampled payload was not logged")
