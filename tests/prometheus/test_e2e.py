"""The shipped alert rules against a real service and a real Prometheus: MNIST digits raise no alert, the same digits inverted (255 - pixels, as a client that sends black on white would) raise ModelPredictionDrift and ModelInputsOutsideReference for mnist-fc, and MNIST digits again resolve the drift alert.

A two-worker `bentoml serve`, and Debian's prometheus scraping it every second with deploy/prometheus/rules.yml,
every window and `for:` divided by 30 (10m -> 20s; testkit.prometheus.shortened), the expressions as shipped.
Traffic flows all along (batches of 100 digits to /digits from a thread), since the rules look at rates over a
window; every wait polls Prometheus's HTTP API up to a deadline. About 85 s on 2 cores (a minute of it with
Prometheus).

Needs Debian's prometheus package; `make test` installs it. Without it this test fails, naming what to install.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import yaml

from testkit import prometheus
from testkit.server import request, started_service

MODEL = "mnist-fc"
BATCH = 100
BATCHES = 20  # 2,000 distinct digits a phase, sent over and over
DEADLINE_S = 90.0  # for each state awaited: generous, a test of what happens, not of how fast
EVERY_S = 0.5
PSI = f'model_version:model_predictions:psi_rate10m{{model="{MODEL}"}}'
THRESHOLD = f'max by (model, version) (model_drift_threshold{{model="{MODEL}"}})'
GUARD = f'model_version:model_predictions:increase10m{{model="{MODEL}"}}'
GAUGE = f'model_prediction_drift{{model="{MODEL}"}}'
DRIFTED = {"ModelPredictionDrift", "ModelInputsOutsideReference"}


class Traffic(threading.Thread):
    """Sends batches of `bodies[mode]` to /digits, one after another, until stopped; counts answers by status."""

    def __init__(self, url: str, bodies: dict[str, list[bytes]]):
        super().__init__(daemon=True)
        self.url, self.bodies = url, bodies
        self.mode = "mnist"
        self.statuses: dict[int, int] = {}
        self.sent = {mode: 0 for mode in bodies}
        self.failure: BaseException | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        i = 0
        try:
            while not self.stopping.is_set():
                mode = self.mode
                status, _ = request(self.url, "POST", "/digits", self.bodies[mode][i % len(self.bodies[mode])],
                                    "application/json", timeout=30)
                self.statuses[status] = self.statuses.get(status, 0) + 1
                self.sent[mode] += BATCH
                i += 1
                self.stopping.wait(0.05)  # pace: about 1,000-2,000 digits a second, CPU left for the rest
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.failure = e

    def stop(self) -> None:
        self.stopping.set()
        if self.ident is not None:  # started
            self.join(timeout=60)


def poll(prom: prometheus.Prometheus, traffic: Traffic, condition, what: str, state=lambda: ""):
    """Call condition() every EVERY_S s until it returns something truthy (returned) while traffic flows; fail after
    DEADLINE_S naming `what` and state()."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        if traffic.failure is not None or not traffic.is_alive():
            pytest.fail(f"the traffic stopped while waiting for {what}: {traffic.failure!r}")
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"waited {DEADLINE_S:g} s for {what}; {state()}; active alerts: {prom.alerts()}; "
                        f"sent {traffic.sent}, statuses {traffic.statuses}\nprometheus log:\n{prom.log()[-2000:]}")
        time.sleep(EVERY_S)


def values(prom: prometheus.Prometheus) -> dict[str, float | None]:
    return {"psi": prom.value(PSI), "threshold": prom.value(THRESHOLD), "answers in window": prom.value(GUARD),
            "gauge": prom.value(GAUGE)}


@pytest.fixture
def prometheus_binary() -> str:
    path = prometheus.binary("prometheus")
    if path is None:
        pytest.fail(prometheus.missing("prometheus"))
    return path


def test_drift_alert_fires_on_inverted_digits_and_resolves(prometheus_binary, mnist_test_images, tmp_path):
    images = mnist_test_images[0][:BATCH * BATCHES]
    bodies = {mode: [json.dumps({"images": batch.tolist()}).encode() for batch in np.split(data, BATCHES)]
              for mode, data in (("mnist", images), ("inverted", 255 - images))}
    rules = tmp_path / "rules.yml"
    rules.write_text(prometheus.shortened(prometheus.RULES.read_text()))
    longest_for = max(prometheus.seconds(rule["for"]) for group in yaml.safe_load(rules.read_text())["groups"]
                      for rule in group["rules"] if "for" in rule)

    server = started_service(workers=2, logdir=tmp_path)
    traffic = Traffic(server.url, bodies)
    try:
        with prometheus.running([f"127.0.0.1:{server.port}"], rules, tmp_path / "prometheus") as prom:
            started = time.monotonic()
            traffic.start()

            # 1. MNIST digits: once the rules have judged full windows for longer than any `for:`, nothing has fired.
            def judged_long_enough():
                # the drift alert's guard (>= 500 answers in the window) held at every evaluation of the last
                # longest_for + 3 s; then every alert has had the time to fire
                span = int(longest_for) + 3
                held = prom.value(f"count_over_time(({GUARD} >= 500)[{span}s:1s])")
                return held is not None and held >= span and prom.value(PSI) is not None and \
                    prom.value(GAUGE) is not None and not np.isnan(prom.value(GAUGE))

            poll(prom, traffic, judged_long_enough, "full windows of MNIST digits judged by the rules",
                 lambda: f"{values(prom)}")
            seconds = int(time.monotonic() - started) + 1
            fired = prom.query(f'count_over_time(ALERTS{{alertstate="firing"}}[{seconds}s])')
            assert fired == [], f"alerts fired on MNIST digits: {fired}"
            assert prom.alerts() == [], "alerts pending on MNIST digits"
            healthy = values(prom)
            assert healthy["psi"] < healthy["threshold"], healthy
            assert healthy["gauge"] < healthy["threshold"], healthy

            # 2. The same digits inverted: drift and inputs outside the reference fire for mnist-fc, nothing else.
            traffic.mode = "inverted"

            def drift_fires():
                firing = prom.firing()
                return DRIFTED <= {name for name, labels in firing if labels.get("model") == MODEL} and firing

            firing = poll(prom, traffic, drift_fires, f"{sorted(DRIFTED)} to fire for {MODEL} on inverted digits",
                          lambda: f"{values(prom)}")
            drifted = values(prom)
            assert {name for name, _ in firing} == DRIFTED, firing
            assert drifted["psi"] > drifted["threshold"], drifted
            poll(prom, traffic, lambda: (v := prom.value(GAUGE)) is not None and v > drifted["threshold"],
                 "the drift gauge (a worker's last 500 answers) to pass the threshold", lambda: f"{values(prom)}")

            # 3. MNIST digits again: the drift alert resolves, the recorded PSI back under the threshold.
            traffic.mode = "mnist"
            poll(prom, traffic,
                 lambda: not any(a["labels"]["alertname"] == "ModelPredictionDrift" for a in prom.alerts())
                 and (psi := prom.value(PSI)) is not None and psi < drifted["threshold"],
                 "ModelPredictionDrift to resolve on MNIST digits", lambda: f"{values(prom)}")
            recovered = values(prom)
            assert recovered["psi"] < recovered["threshold"], recovered
            print(f"\nMNIST: {healthy}\ninverted: {drifted}\nMNIST again: {recovered}\nsent: {traffic.sent}, "
                  f"{time.monotonic() - started:.0f} s with Prometheus")
    finally:
        traffic.stop()
        server.stop()
    assert traffic.failure is None, traffic.failure
    assert set(traffic.statuses) == {200}, traffic.statuses
