"""A real Prometheus for tests: find Debian's `prometheus` and `promtool`, shorten the shipped rules' windows to seconds, run a server scraping the service under test, and read its HTTP API.

    rules = tmp_path / "rules.yml"
    rules.write_text(shortened(RULES.read_text()))            # 10m -> 20s, for: 1m -> 2s
    with running(targets=["127.0.0.1:3000"], rules=rules, workdir=tmp_path) as prom:
        prom.query('model_version:model_predictions:psi_rate10m{model="mnist-fc"}')
        prom.firing()                                         # [(alertname, labels), ...]
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from testkit.server import free_port

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
TESTS = REPO / "deploy" / "prometheus" / "rules.test.yml"
INSTALL = "install Debian's prometheus package, which holds prometheus and promtool (`make prometheus` installs it " \
          "when run as root; else sudo apt-get install prometheus)"
SCALE = 30  # the e2e test's windows and `for:` durations are the shipped ones divided by this (10m -> 20s)
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
DURATION = re.compile(r"(\d+)(ms|[smhdwy])")


def binary(name: str) -> str | None:
    """The path of `name` (prometheus, promtool): on PATH, else in /usr/bin; None if absent."""
    path = shutil.which(name) or f"/usr/bin/{name}"
    return path if os.access(path, os.X_OK) else None


def missing(name: str) -> str:
    """Why a test cannot run without `name`, and what to install."""
    return f"{name} is not installed, and tests/prometheus/ needs it: {INSTALL}."


def seconds(duration: str) -> float:
    """A Prometheus duration ("1h30m", "10m", "500ms") in seconds."""
    parts = DURATION.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return sum(int(n) * UNITS[u] for n, u in parts)


def as_seconds(value: float) -> str:
    """A duration in whole seconds (at least 1 s) as Prometheus writes it."""
    return f"{max(1, round(value))}s"


def shortened(rules: str, scale: float = SCALE) -> str:
    """The rules file `rules` with every range `[...]` and every `for:` duration divided by `scale`, in seconds;
    expressions, names and annotations otherwise unchanged (the record names keep their "10m")."""
    out = re.sub(r"\[(\w+)\]", lambda m: f"[{as_seconds(seconds(m.group(1)) / scale)}]", rules)
    return re.sub(r"^(\s*for:[ \t]*)(\w+)[ \t]*$", lambda m: f"{m.group(1)}{as_seconds(seconds(m.group(2)) / scale)}",
                  out, flags=re.MULTILINE)


def config(targets: list[str], rules: Path, interval: str = "1s") -> str:
    """A prometheus.yml scraping `targets` (host:port) every `interval` as job thermo-digits, with `rules`."""
    return json.dumps({  # JSON is YAML
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "thermo-digits", "metrics_path": "/metrics",
                            "static_configs": [{"targets": targets}]}],
    }, indent=2)


class PrometheusFailed(RuntimeError):
    """Prometheus exited or did not become ready; the message ends with its log."""


@dataclass
class Prometheus:
    proc: subprocess.Popen
    port: int
    log_file: IO[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        self.log_file.flush()
        return Path(self.log_file.name).read_text(errors="replace")

    def get(self, path: str, **params: str) -> dict:
        """GET an API path; its "data" (PrometheusFailed on an error answer)."""
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        with urllib.request.urlopen(url, timeout=10) as resp:
            answer = json.load(resp)
        if answer.get("status") != "success":
            raise PrometheusFailed(f"{path} {params}: {answer}")
        return answer["data"]

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query now: [(labels, value), ...]."""
        data = self.get("/api/v1/query", query=expr)
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def value(self, expr: str) -> float | None:
        """The one value of an instant query (None when it has none; ValueError when several)."""
        result = self.query(expr)
        if len(result) > 1:
            raise ValueError(f"{expr} has {len(result)} series: {result}")
        return result[0][1] if result else None

    def alerts(self) -> list[dict]:
        """The active alerts (pending and firing), as /api/v1/alerts gives them."""
        return self.get("/api/v1/alerts")["alerts"]

    def firing(self) -> list[tuple[str, dict[str, str]]]:
        """(alertname, labels) of each firing alert."""
        return [(a["labels"]["alertname"], a["labels"]) for a in self.alerts() if a["state"] == "firing"]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM to its process group, SIGKILL after 10 s."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log_file.close()


def start(targets: list[str], rules: Path, workdir: Path, interval: str = "1s") -> Prometheus:
    """Prometheus in its own process group scraping `targets` with `rules`, its config, data and log in `workdir`,
    listening on a free port of 127.0.0.1."""
    prometheus = binary("prometheus")
    if prometheus is None:
        raise FileNotFoundError(missing("prometheus"))
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "prometheus.yml"
    config_file.write_text(config(targets, rules, interval))
    port = free_port()
    log = open(workdir / f"prometheus-{port}.log", "w+")  # noqa: SIM115 - kept open by the Prometheus, closed by stop()
    proc = subprocess.Popen([prometheus, f"--config.file={config_file}", f"--storage.tsdb.path={workdir / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
                            cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return Prometheus(proc, port, log)


@contextlib.contextmanager
def running(targets: list[str], rules: Path, workdir: Path, interval: str = "1s",
            timeout: float = 60) -> Iterator[Prometheus]:
    """start(), ready (GET /-/ready answers 200) until the block ends; PrometheusFailed if it never is."""
    prom = start(targets, rules, workdir, interval)
    try:
        deadline = time.monotonic() + timeout
        while not prom.ready():
            if prom.proc.poll() is not None or time.monotonic() > deadline:
                raise PrometheusFailed(f"prometheus did not become ready:\n{prom.log()[-4000:]}")
            time.sleep(0.1)
        yield prom
    finally:
        prom.stop()
