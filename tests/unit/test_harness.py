"""The harness's own parts that need no model server: payloads, the load driver's counting, the results' settings."""

import io

import numpy as np
import pytest
from PIL import Image

from harness import selftest
from testkit import payloads
from testkit.driver import Driver, go
from harness.report import service_settings
from testkit.server import free_port


@pytest.fixture(scope="module")
def trivial():
    """A trivial HTTP server in a subprocess: 200 to every request but every 4th, which gets 429."""
    port = free_port()
    proc = selftest.start(port, refuse_every=4)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait()


def test_benchmark_bodies():
    ps = payloads.bench_payloads()
    assert set(ps) == {"temperature", "digit", "digit_distilled", "digits64", "digit_image", "digit_image200"}
    image = ps["digit_image200"].body.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0]
    img = Image.open(io.BytesIO(image))
    assert (img.format, img.size) == ("PNG", (200, 200))
    pixels = np.asarray(img)
    assert pixels[0, 0] == 255 and pixels.min() < 64  # black on white
    assert ("digits64", 16) in payloads.cells() and ("digits64", 1) not in payloads.cells()
    assert sum(w for _, w in payloads.request_mix()) == pytest.approx(1.0)


def test_synthetic_digits_stand_in_without_mnist(monkeypatch, tmp_path):
    monkeypatch.setenv("MNIST_DATA_ROOT", str(tmp_path))
    images, labels = payloads.mnist_test(20)
    assert images.shape == (20, 28, 28) and images.dtype == np.uint8 and images.max() == 255
    assert list(labels[:10]) == list(range(10))
    with pytest.raises(FileNotFoundError):
        payloads.mnist_test(synthetic=False)


def test_open_loop_counts_refusals_apart_and_sends_on_schedule(trivial):
    records = go(Driver(trivial, payloads.mix_or_endpoint("temperature")).run(1.0, rate=400))
    s = records.summary()
    assert 395 <= s["requests"] <= 401
    assert s["transport_errors"] == 0 and s["refused_429"] == s["non_2xx"] > 0
    assert s["ok_2xx"] + s["refused_429"] == s["requests"]
    assert s["ok_per_s"] == pytest.approx(s["ok_2xx"] / 1.0)  # 2xx only: a 429 is not throughput
    assert s["client"]["cpu_s"] > 0 and s["client"]["send_lag_ms"]["p99"] < 100


def test_clients_that_honour_retry_after_hold_back_what_they_would_have_sent(trivial):
    """Every 4th request is refused with Retry-After: 1; 20 polite sources each wait 1-2 s after their refusal."""
    polite = go(Driver(trivial, payloads.mix_or_endpoint("temperature"), honour_retry_after=True).run(2.0, rate=400,
                                                                                                      sources=20))
    rude = go(Driver(trivial, payloads.mix_or_endpoint("temperature")).run(2.0, rate=400, sources=20))
    assert rude.extra["held_back"] == 0 and 795 <= len(rude) <= 801
    assert polite.extra["held_back"] > 400 and abs(len(polite) + polite.extra["held_back"] - len(rude)) <= 1
    assert polite.summary()["refused_429"] < rude.summary()["refused_429"] / 2


def test_closed_loop_keeps_n_requests_in_flight(trivial):
    records = go(Driver(trivial, payloads.request_mix()).run(0.5, clients=4))
    assert len(records) > 100 and records.max_connections <= 4
    assert set(records.by_kind()) == {"temperature", "digit", "digits", "image"}


def test_no_server_is_a_transport_error_not_a_status():
    records = go(Driver(f"http://127.0.0.1:{free_port()}", payloads.request_mix()).run(0.3, clients=1))
    assert len(records) >= 2 and records.summary()["transport_errors"] == len(records)
    assert records.not_ok(1)[0]["error"] == "connect"


def test_results_carry_the_service_settings_as_read():
    s = service_settings({"SERVICE_QUEUE_TARGET_S": "0.25"}, workers=2, bentoml_config="x=1")
    assert s["settings"]["queue_target_s"] == 0.25 and s["workers"] == 2
    assert s["env"] == {"SERVICE_QUEUE_TARGET_S": "0.25"} and s["bentoml_config"] == "x=1"


def test_connections_per_worker_counts_each_worker_s_accepted_connections_to_the_port():
    """What tests/http/test_workers.py and harness.peers read: connections each serving process holds to one port; the
    client's ends of the same connections and connections to other ports are not counted."""
    import socket
    import types

    import psutil

    from testkit.server import Server

    listener = socket.create_server(("127.0.0.1", 0))
    other = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    opened = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    opened.append(socket.create_connection(("127.0.0.1", other.getsockname()[1])))
    accepted = [listener.accept()[0] for _ in range(3)] + [other.accept()[0]]
    this_process = types.SimpleNamespace(port=port, workers=lambda: [psutil.Process()])
    try:
        assert Server.connections_per_worker(this_process) == [3]
        assert Server.connections_per_worker(this_process, other.getsockname()[1]) == [1]
    finally:
        for s in opened + accepted + [listener, other]:
            s.close()
