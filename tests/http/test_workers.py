"""Workers on a real `bentoml serve`: one per usable CPU by default (affinity included), and new connections spread over
them, each worker holding its share of a round's connections and answering on them, on /digit and /temperature.

The share is of connections, not of answers: the kernel hashes each connection to one worker's SO_REUSEPORT listener
(the ``reuseport`` patch), so 64 connections split about evenly (fewer than 16 on one worker: about 2 rounds in
100,000), while the answers each worker gives also follow the CPU it gets (beside a busy process one worker answered
34 % of a round on 50 % of its connections)."""

import os
import tempfile
import threading
from pathlib import Path

import pytest

from service.cpus import default_workers
from testkit.driver import Driver, go
from testkit.payloads import bench_payloads
from testkit.server import started_service
from testkit.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 3  # per endpoint; harness.workers runs 10
SHARE = 0.25  # the least share of a round's connections each of two workers must hold
CLIENTS = 64  # connections per round


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


def shares(server, endpoint: str, clients: int = CLIENTS, seconds: float = 2.0) -> tuple[list[int], dict[int, int], int]:
    """One round: `clients` new keep-alive connections for `seconds`; the connections each worker held (the sample
    with the most, polled while the round runs), each worker's answers, and the driver's 2xx."""
    payload = bench_payloads()[endpoint]
    start = server.log_size()
    held: list[int] = []
    over = threading.Event()

    def sample() -> None:
        nonlocal held
        while sum(held) < clients and not over.wait(0.05):  # until every connection is seen
            now = server.connections_per_worker()
            if sum(now) > sum(held):
                held = now

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        records = go(Driver(server.url, [(payload, 1.0)]).run(seconds, clients=clients))
    finally:
        over.set()
        sampler.join()
    ok = int(records.ok.sum())
    # The supervisor copies the workers' logs into ours with a delay.
    wait_until(lambda: sum(server.answers_by_worker(start, payload.path).values()) >= ok, every_s=0.1,
               message=lambda: f"{ok} answers in the log (by worker: {server.answers_by_worker(start, payload.path)})")
    return held, server.answers_by_worker(start, payload.path), ok


@pytest.mark.parametrize("endpoint", ["digit", "temperature"])
def test_two_workers_each_hold_their_share_of_every_round_s_connections_and_answer(endpoint, record_property):
    server = started(workers=2)
    try:
        rounds = [shares(server, endpoint) for _ in range(ROUNDS)]
    finally:
        server.stop()
    figures = [{"connections_by_worker": held, "answers_by_worker": counts, "answered_2xx": ok}
               for held, counts, ok in rounds]
    record_property("figures", figures)
    for held, counts, ok in rounds:
        assert ok > 0 and sum(counts.values()) == ok, figures
        assert len(counts) == 2, figures  # both workers answered
        assert len(held) == 2 and sum(held) >= CLIENTS // 2, figures  # the sample saw most of the round's connections
        assert min(held) >= SHARE * sum(held), figures
