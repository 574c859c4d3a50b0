"""Bad-input corpus against a real `bentoml serve`: each input gets its documented 4xx, and afterwards /readyz is 200
and a valid request still gets the right answer; a slow body is answered 408 no sooner than its timeout, and others
are served while it is held. How fast the answers come is measured by the harness, not asserted here."""

import json
import select
import socket
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import jsonschema_rs
import numpy as np
import pytest

from expected import celsius
from testkit.payloads import crafted_png as png_header, png
from service.api.errors import ERROR_SCHEMA

REPO = Path(__file__).resolve().parents[2]
MAX_BODY_BYTES = 16 * 1024 * 1024  # the default SERVICE_MAX_BODY_BYTES
# SERVICE_BODY_TIMEOUT_S for this server (default 10 s): short, to keep the slow-client case short, yet long enough for
# a busy host to answer the requests that must be served while a slow client is held.
BODY_TIMEOUT_S = 5.0
ERROR = jsonschema_rs.validator_for(ERROR_SCHEMA)


@pytest.fixture(scope="module")
def server(serve):
    env = {"SERVICE_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}
    with serve(".", REPO, tempfile.mkdtemp(prefix="bentoml-home-corpus-"), env=env) as (url, _):
        yield url


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def digit(mnist_test_images):
    images, labels = mnist_test_images
    return images[0], int(labels[0])


def assert_healthy(http, digit) -> None:
    """/readyz is 200, and valid requests get the right answers."""
    assert http.get("/readyz").status_code == 200
    image, label = digit
    r = http.post("/digit", json={"pixels": image.tolist()})
    assert r.status_code == 200 and r.json()["digit"] == label, r.text
    r = http.post("/digit/image", files={"image": ("d.png", png(image), "image/png")})
    assert r.status_code == 200 and r.json()["digit"] == label, r.text
    r = http.post("/temperature", json={"readings": [35.7]})
    assert r.status_code == 200 and r.json()["celsius"][0] == pytest.approx(celsius(35.7), abs=1e-3), r.text


def json_post(route: str, body: bytes, content_type: str = "application/json"):
    return lambda http: http.post(route, content=body, headers={"content-type": content_type})


def upload(data: bytes, field: str = "image", content_type: str = "image/png"):
    return lambda http: http.post("/digit/image", files={field: ("digit.png", data, content_type)})


def truncated_png() -> bytes:
    image = np.zeros((200, 200), np.uint8)
    image[50:150, 90:110] = 255
    whole = png(image)
    return whole[: len(whole) // 2]


def deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


CORPUS = {
    # name: (send(http) -> response, status, fragment of the error message)
    "truncated PNG": (upload(truncated_png()), 400, "truncated or corrupt"),
    "PNG declaring 20000x20000": (upload(png_header(20_000, 20_000)), 400, "the limit is 16777216 pixels"),
    "non-image bytes as image/png": (upload(b"this is not an image\n" * 50), 400, "unsupported or unrecognised image format"),
    "empty upload": (upload(b""), 400, "empty"),
    "upload under the wrong field name": (upload(png(np.zeros((28, 28), np.uint8)), field="file"), 400,
                                          "send the file in field: image"),
    "image sent as a text field (a URL)": (lambda http: http.post("/digit/image", files={"image": (None, "http://127.0.0.1:1/x.png")}),
                                           400, "must be uploaded as a file"),
    # BentoML reads a multipart text part as JSON: "null" would become None, the default version, silently.
    "version null in an upload": (lambda http: http.post("/digit/image", files={
        "image": ("digit.png", png(np.zeros((28, 28), np.uint8)), "image/png"), "version": (None, "null")}), 400,
        "version: Input should be a valid string"),
    "version null in JSON": (json_post("/digit", json.dumps({"pixels": [[0] * 28] * 28, "version": None}).encode()), 400,
                             "version: Input should be a valid string"),
    "multipart without a boundary": (json_post("/digit/image", b"--x\r\n", "multipart/form-data"), 400, "boundary"),
    "1,000,000 readings": (json_post("/temperature", json.dumps({"readings": [1.5] * 1_000_000}).encode()), 400,
                           "at most 10000"),
    "1,000,000 images": (json_post("/digits", json.dumps({"images": [0] * 1_000_000}).encode()), 400, "at most 1024"),
    "1,000,000 pixels": (json_post("/digit", json.dumps({"pixels": [0] * 1_000_000}).encode()), 400,
                         "expected 28 rows, got 1000000"),
    "JSON nested 10,000 deep": (json_post("/temperature", b'{"readings": ' + deep(10_000) + b"}"), 400, "recursion limit"),
    "JSON nested 10,000 deep (images)": (json_post("/digits", b'{"images": ' + deep(10_000) + b"}"), 400, "recursion limit"),
    "NaN literal": (json_post("/temperature", b'{"readings": [NaN]}'), 400, "finite number"),
    "Infinity literal in pixels": (json_post("/digit", json.dumps({"pixels": [[float("inf")] * 28] * 28}).encode()), 400,
                                   "finite number"),
    "wrong content type": (json_post("/temperature", b'{"readings": [1]}', "text/plain"), 415, "send application/json"),
    "JSON sent to the upload route": (json_post("/digit/image", b'"http://127.0.0.1:1/x.png"'), 415, "multipart/form-data"),
    "no content type": (lambda http: http.post("/digits", content=b"{}"), 415, "(none)"),
    "empty body": (json_post("/temperature", b""), 400, "readings: Field required"),
    "empty multipart": (json_post("/digit/image", b"--XX--\r\n", "multipart/form-data; boundary=XX"), 400,
                        "image: Field required"),
    "not JSON": (json_post("/digit", b"\xff\xfe\x00garbage"), 400, "Invalid JSON"),
}


@pytest.mark.parametrize("name", CORPUS, ids=list(CORPUS))
def test_bad_input_gets_its_4xx_and_harms_nothing(http, digit, name):
    send, status, fragment = CORPUS[name]
    r = send(http)
    assert r.status_code == status, r.text
    ERROR.validate(r.json())
    assert fragment in r.json()["error"]
    assert_healthy(http, digit)


def raw_request(url: str, head: bytes, body_parts=(), pause: float = 0.0, read_timeout: float = 60.0,
                sent: threading.Event | None = None) -> tuple[bytes, float]:
    """Send `head` (then set `sent`), then the body parts `pause` s apart until the server answers; return (response,
    seconds from the connection to the answer)."""
    parsed = urlparse(url)
    started = time.monotonic()
    with socket.create_connection((parsed.hostname, parsed.port), timeout=read_timeout) as s:
        s.sendall(head)
        if sent is not None:
            sent.set()
        try:
            for part in body_parts:
                if select.select([s], [], [], pause)[0]:
                    break  # the server has answered (early): stop sending
                s.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and closed: read what it said
        response, answered = b"", None
        try:
            while chunk := s.recv(65536):
                answered = answered or time.monotonic()
                response += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    return response, (answered or time.monotonic()) - started


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def body_of(response: bytes) -> dict:
    return json.loads(response.split(b"\r\n\r\n", 1)[1])


def test_body_over_the_limit_is_413_before_it_is_sent(server, http, digit):
    head = (b"POST /temperature HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1))
    response, _ = raw_request(server, head)  # no body ever follows: a server that waited for it would answer 408
    assert status_of(response) == 413, response[:300]
    ERROR.validate(body_of(response))
    assert str(MAX_BODY_BYTES) in body_of(response)["error"]
    assert_healthy(http, digit)


def test_chunked_body_over_the_limit_is_413(server, http, digit):
    head = b"POST /temperature HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    piece = b"1," * (512 * 1024)  # 1 MiB
    chunk = b"%x\r\n" % len(piece) + piece + b"\r\n"
    response, _ = raw_request(server, head, [chunk] * 17 + [b"0\r\n\r\n"])
    assert status_of(response) == 413, response[:300]
    assert_healthy(http, digit)


@pytest.mark.parametrize("dribble", [False, True], ids=["stalls", "one byte every 0.5 s"])
def test_slow_body_is_a_408_after_the_body_timeout_and_blocks_nobody(server, http, digit, dribble):
    body = json.dumps({"readings": [35.7] * 50}).encode()
    head = (b"POST /temperature HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    parts = [body[:5]] + ([bytes([b]) for b in body[5:40]] if dribble else [])
    result, sent = {}, threading.Event()
    # The pause between parts is the behaviour under test: a client too slow to send its body in time.
    slow = threading.Thread(target=lambda: result.update(zip(("response", "elapsed"), raw_request(
        server, head, parts, pause=0.5 if dribble else 0, sent=sent))))
    slow.start()
    assert sent.wait(60), "the slow client did not connect"
    # While the slow client holds its request open, others are served: before it is answered.
    assert_healthy(http, digit)
    assert slow.is_alive() and not result, f"the slow client was answered before the others: {result}"
    slow.join(timeout=BODY_TIMEOUT_S + 60)
    assert not slow.is_alive()
    response = result["response"]
    assert status_of(response) == 408, response[:300]
    ERROR.validate(body_of(response))
    assert result["elapsed"] >= BODY_TIMEOUT_S  # not before its timeout (how long after is the harness's to measure)
    assert_healthy(http, digit)


def test_tiny_max_value_gives_finite_probabilities(http, digit):
    """max_value=1e-310 is valid (> 0) but 0 in float32: dividing in float32 made every probability NaN (null)."""
    image, label = digit
    tiny = 1e-310
    r = http.post("/digit", json={"pixels": (image / 255.0 * tiny).tolist(), "max_value": tiny})
    assert r.status_code == 200, r.text
    assert all(isinstance(p, float) and np.isfinite(p) for p in r.json()["probabilities"]), r.text
    assert r.json()["digit"] == label
