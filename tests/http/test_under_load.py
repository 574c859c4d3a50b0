"""A real server under concurrent load: digit requests share model calls, and every refusal is counted and logged."""

import asyncio
import re
import socket
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from testkit.payloads import png

REPO = Path(__file__).resolve().parents[2]
# Small limits so that each refusal can be provoked on purpose: one request held at a time, bodies due in 1 s; one
# worker (the limits are a worker's: with two, the second request could land on the other one).
ENV = {"SERVICE_MAX_REQUESTS": "1", "SERVICE_BODY_TIMEOUT_S": "1", "SERVICE_MAX_BODY_BYTES": "100000",
       "BENTOML_CONFIG_OPTIONS": "services.ThermoDigits.workers=1"}


@pytest.fixture(scope="module")
def server(serve):
    with serve(".", REPO, tempfile.mkdtemp(prefix="bentoml-home-load-")) as running:
        yield running


@pytest.fixture(scope="module")
def strict_server(serve):
    with serve(".", REPO, tempfile.mkdtemp(prefix="bentoml-home-strict-"), env=ENV) as running:
        yield running


def metric(url: str, name: str, **labels) -> float:
    """Sum of a Prometheus series from /metrics over the lines that carry all `labels`."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_concurrent_digit_requests_share_model_calls_and_get_their_own_answers(server, mnist_test_images):
    url, _ = server
    images, labels = mnist_test_images
    calls_before = metric(url, "model_batch_images_count")
    images_before = metric(url, "model_batch_images_sum")

    async def burst():
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=64)) as http:
            digits = [http.post("/digit", json={"pixels": images[i].tolist()}) for i in range(48)]
            uploads = [http.post("/digit/image", files={"image": ("d.png", png(images[i]), "image/png")})
                       for i in range(48, 64)]
            batch = http.post("/digits", json={"images": images[64:96].tolist()})
            return await asyncio.gather(*digits, *uploads, batch)

    answers = asyncio.run(burst())
    assert all(r.status_code == 200 for r in answers)
    got = [r.json()["digit"] for r in answers[:64]] + [p["digit"] for p in answers[64].json()]
    assert sum(g == y for g, y in zip(got, labels[:96])) >= 94  # each request got its own rows back
    calls = metric(url, "model_batch_images_count") - calls_before
    assert metric(url, "model_batch_images_sum") - images_before == 96
    assert calls < 64, f"{calls} model calls for 65 requests: nothing was batched"


def test_a_lone_request_is_one_model_call_of_one_image(server, mnist_test_images):
    url, _ = server
    before = metric(url, "model_batch_images_bucket", le="1.0")
    r = httpx.post(f"{url}/digit", json={"pixels": mnist_test_images[0][0].tolist()})
    assert r.status_code == 200
    assert metric(url, "model_batch_images_bucket", le="1.0") == before + 1


def raw_request(url: str, head: bytes, body: bytes = b"", wait: float = 0.0) -> socket.socket:
    """Open a connection and send a request (or only its start, for a client that is slow to send)."""
    u = urlparse(url)
    sock = socket.create_connection((u.hostname, u.port))
    sock.sendall(head + body)
    time.sleep(wait)
    return sock


def test_refusals_appear_in_metrics_and_the_access_log(strict_server):
    url, log = strict_server
    counts = {code: metric(url, "bentoml_service_request_total", http_response_code=code, endpoint="/temperature")
              for code in ("408", "413", "415", "429")}
    assert httpx.post(f"{url}/temperature", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    assert httpx.post(f"{url}/temperature", content=b"1" * 100_001,
                      headers={"content-type": "application/json"}).status_code == 413
    # A client that announces 20 bytes and sends 2: it holds the one place for a second, then gets 408.
    slow = raw_request(url, b"POST /temperature HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 20\r\n\r\n", b"{}", wait=0.3)
    refused = httpx.post(f"{url}/temperature", json={"readings": [1.0]})
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert "x-bentoml-request-id" not in refused.headers  # refused at the door (service/door.py), before BentoML
    assert "limit 1" in refused.json()["error"]
    slow.settimeout(5)
    assert slow.recv(4096).startswith(b"HTTP/1.1 408")
    slow.close()
    time.sleep(0.5)
    for code in counts:
        assert metric(url, "bentoml_service_request_total", http_response_code=code, endpoint="/temperature") \
            == counts[code] + 1, code
    log.seek(0)
    lines = [l for l in log.read().splitlines() if "path=/temperature" in l]
    for code in counts:
        assert any(re.search(rf"status={code}\b", l) for l in lines), f"no access-log line with status {code}"
