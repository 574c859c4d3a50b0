"""Workers on a real `bentoml serve`: one per usable CPU by default (affinity included), and new connections spread over
them so that each answers its share of a round, on /digit and /temperature."""

import os
import tempfile
from pathlib import Path

import pytest

from service.cpus import default_workers
from testkit.driver import Driver, go
from testkit.payloads import bench_payloads
from testkit.server import started_service
from testkit.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 3  # per endpoint; harness.workers runs 10
SHARE = 0.35  # the least share of a round's answers each of two workers must give


def started(**kwargs):
    return started_service(home=tempfile.mkdtemp(prefix="bentoml-home-workers-"), **kwargs)


def test_the_default_is_one_worker_per_usable_cpu():
    server = started()
    try:
        assert len(server.workers()) == default_workers(), server.log()[-2000:]
    finally:
        server.stop()


def test_a_process_allowed_one_cpu_runs_one_worker_and_the_setting_overrides_the_default():
    one_cpu = {min(os.sched_getaffinity(0))}
    server = started(cpus=one_cpu)
    try:
        assert len(server.workers()) == 1, server.log()[-2000:]
    finally:
        server.stop()
    server = started(cpus=one_cpu, workers=2)  # BentoML's services.ThermoDigits.workers
    try:
        assert len(server.workers()) == 2, server.log()[-2000:]
    finally:
        server.stop()


def shares(server, endpoint: str, clients: int = 64, seconds: float = 2.0) -> tuple[dict[int, int], int]:
    """One round: `clients` new keep-alive connections for `seconds`; each worker's answers, and the driver's 2xx."""
    payload = bench_payloads()[endpoint]
    start = server.log_size()
    records = go(Driver(server.url, [(payload, 1.0)]).run(seconds, clients=clients))
    ok = int(records.ok.sum())
    # The supervisor copies the workers' logs into ours with a delay.
    wait_until(lambda: sum(server.answers_by_worker(start, payload.path).values()) >= ok, every_s=0.1,
               message=lambda: f"{ok} answers in the log (by worker: {server.answers_by_worker(start, payload.path)})")
    return server.answers_by_worker(start, payload.path), ok


@pytest.mark.parametrize("endpoint", ["digit", "temperature"])
def test_two_workers_each_answer_their_share_of_every_round(endpoint, record_property):
    server = started(workers=2)
    try:
        rounds = [shares(server, endpoint) for _ in range(ROUNDS)]
    finally:
        server.stop()
    figures = [{"answers_by_worker": counts, "answered_2xx": ok} for counts, ok in rounds]
    record_property("figures", figures)
    for counts, ok in rounds:
        assert ok > 0 and sum(counts.values()) == ok, figures
        assert len(counts) == 2 and min(counts.values()) >= SHARE * ok, figures
