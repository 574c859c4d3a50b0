"""A real server under concurrent load: digit requests share model calls, and every refusal is counted and logged."""

import asyncio
import re
import select
import socket
import tempfile
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from testkit.payloads import png
from testkit.wait import wait_until

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


def raw_request(url: str, head: bytes, body: bytes = b"") -> socket.socket:
    """Open a connection and send a request (or only its start, for a client that is slow to send)."""
    u = urlparse(url)
    sock = socket.create_connection((u.hostname, u.port))
    sock.sendall(head + body)
    return sock


def status_of(answer: bytes) -> str:
    """The status code of a raw HTTP/1.1 answer, as /metrics labels it ("0": none)."""
    return answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/1.1 ") else "0"


# A client that announces 20 bytes and sends 2: it holds the worker's one place until its body timeout, then gets 408.
SLOW = (b"POST /temperature HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n", b"{}")


def refused_behind_a_slow_client(url: str, provoked: Counter) -> tuple[socket.socket, httpx.Response]:
    """Start a slow client, then send requests until one is refused (429) because it holds the one place; returns
    (the slow client, the refusal). Every answer is counted in `provoked`, by status. Should the slow client be
    answered first (its body timeout passed before a request of ours came, or ours took the place before its head
    was read), another takes its place."""
    slow = raw_request(url, *SLOW)

    def refused() -> httpx.Response | None:
        nonlocal slow
        if select.select([slow], [], [], 0)[0]:  # answered already: it no longer holds the place
            provoked[status_of(slow.recv(4096))] += 1
            slow.close()
            slow = raw_request(url, *SLOW)
        r = httpx.post(f"{url}/temperature", json={"readings": [1.0]}, timeout=30)
        provoked[str(r.status_code)] += 1
        return r if r.status_code == 429 else None

    refusal = wait_until(refused, message=lambda: f"a request refused behind a slow client (answers: {provoked})")
    return slow, refusal


def test_refusals_appear_in_metrics_and_the_access_log(strict_server):
    url, log = strict_server
    codes = ("408", "413", "415", "429")
    counted = lambda: {code: metric(url, "bentoml_service_request_total", http_response_code=code,  # noqa: E731
                                    endpoint="/temperature") for code in codes}
    before = counted()
    provoked: Counter = Counter()
    r = httpx.post(f"{url}/temperature", content=b"x", headers={"content-type": "text/plain"})
    provoked[str(r.status_code)] += 1
    assert r.status_code == 415
    r = httpx.post(f"{url}/temperature", content=b"1" * 100_001, headers={"content-type": "application/json"})
    provoked[str(r.status_code)] += 1
    assert r.status_code == 413
    slow, refused = refused_behind_a_slow_client(url, provoked)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert "x-bentoml-request-id" not in refused.headers  # refused at the door (service/door.py), before BentoML
    assert "limit 1" in refused.json()["error"]
    slow.settimeout(60)
    answer = slow.recv(4096)
    slow.close()
    provoked[status_of(answer)] += 1
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    expected = {code: before[code] + provoked[code] for code in codes}
    # Each answer is counted once it is sent: poll, then ask for exactly what was provoked, no more.
    wait_until(lambda: all(n >= expected[code] for code, n in counted().items()),
               message=lambda: f"/metrics to count {expected} (counts {counted()})")
    assert counted() == expected, provoked

    def not_logged() -> list[str]:
        log.seek(0)
        lines = [l for l in log.read().splitlines() if "path=/temperature" in l]
        return [code for code in codes if not any(re.search(rf"status={code}\b", l) for l in lines)]

    wait_until(lambda: not not_logged(), message=lambda: f"access-log lines with status {not_logged()}")
