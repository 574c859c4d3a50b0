"""Bearer tokens on a real `bentoml serve`: every protected route refuses without a valid token (401, before the
body is read, counted and logged, the token never logged) and answers with any listed one; probes stay open;
both Python clients send one; a bad token file stops the start."""

import socket
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import bentoml
import httpx
import numpy as np
import pytest

from service.api.errors import ERROR_SCHEMA
from testkit.payloads import mnist_test, png
from testkit.server import exit_status
from testkit.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
TOKENS = ("first-token-0123456789", "second-token-abcdefghij")
WRONG = "wrong-token-0123456789"
MAX_HEADER_BYTES = 32 * 1024  # the default SERVICE_MAX_HEADER_BYTES
IMAGE = mnist_test(1)[0][0]
JSON_POSTS = {
    "/temperature": {"readings": [35.7]},
    "/digit": {"pixels": IMAGE.tolist()},
    "/digits": {"images": [IMAGE.tolist()]},
    "/v2/models/temperature-linear/infer": {"inputs": [{"name": "readings", "shape": [1, 1], "datatype": "FP64",
                                                        "data": [35.7]}]},
}
GETS = ("/metadata", "/docs.json", "/schema.json", "/v2", "/v2/models/mnist-fc", "/v2/models/mnist-fc/ready")
OPEN = ("/livez", "/readyz", "/healthz", "/metrics", "/v2/health/live", "/v2/health/ready", "/", "/web/app.js", "/docs",
        "/monitor")


@pytest.fixture(scope="module")
def server(serve):
    env = {"SERVICE_API_TOKENS": ",".join(TOKENS)}
    with serve(".", REPO, tempfile.mkdtemp(prefix="bentoml-home-auth-"), env=env) as running:
        yield running


def send(http, path: str, token: str | None = None, header: str | None = None) -> httpx.Response:
    headers = {"authorization": header if header is not None else f"Bearer {token}"} if (token or header) else {}
    if path in JSON_POSTS:
        return http.post(path, json=JSON_POSTS[path], headers=headers)
    if path == "/digit/image":
        return http.post(path, files={"image": ("d.png", png(IMAGE), "image/png")}, headers=headers)
    return http.get(path, headers=headers)


def assert_refused(r: httpx.Response, invalid: bool) -> None:
    import jsonschema_rs

    assert r.status_code == 401, (r.request.url, r.text)
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="thermo-digits"') and ('error="invalid_token"' in challenge) == invalid
    jsonschema_rs.validator_for(ERROR_SCHEMA).validate(r.json())


@pytest.mark.parametrize("path", [*JSON_POSTS, "/digit/image", *GETS])
def test_a_protected_route_needs_any_listed_token(server, path):
    with httpx.Client(base_url=server[0], timeout=30) as http:
        assert_refused(send(http, path), invalid=False)
        assert_refused(send(http, path, WRONG), invalid=True)
        for token in TOKENS:
            assert send(http, path, token).status_code == 200, path


@pytest.mark.parametrize("path", OPEN)
def test_probes_metrics_and_the_page_need_no_token(server, path):
    assert httpx.get(f"{server[0]}{path}", timeout=30).status_code == 200


@pytest.mark.parametrize("header,status", [
    (f"Basic {TOKENS[0]}", 401),
    ("Bearer", 401),
    ("Bearer ", 401),
    (f"Bearer {TOKENS[0]}   ", 200),  # spaces around a header value are not part of it (RFC 9110)
    (f"Bearer {TOKENS[0]}x", 401),
    (f"bearer  {TOKENS[1]}", 200),
])
def test_malformed_authorization(server, header, status):
    head = (f"POST /temperature HTTP/1.1\r\nHost: x\r\nAuthorization: {header}\r\nContent-Type: application/json\r\n"
            f"Content-Length: 18\r\n\r\n{{\"readings\": [1]}}\n").encode()
    data, _ = raw(server[0], head)
    assert data.startswith(f"HTTP/1.1 {status} ".encode()), data[:300]


def raw(url: str, head: bytes, read_timeout: float = 60, closed_within: float = 1) -> tuple[bytes, bool]:
    """Send `head` (and no body); (what came back, whether the server closed the connection within `closed_within` s
    of its answer: as soon as it does, so a caller that expects the close can give it long)."""
    u = urlsplit(url)
    with socket.create_connection((u.hostname, u.port), timeout=read_timeout) as s:
        try:
            s.sendall(head)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
                if b"\r\n\r\n" in data and len(data.split(b"\r\n\r\n", 1)[1]) >= int(
                        next(l for l in data.split(b"\r\n") if l.lower().startswith(b"content-length:")).split(b":")[1]):
                    break
            else:
                return data, True
        except (socket.timeout, ConnectionResetError):
            return data, False
        try:
            s.settimeout(closed_within)
            return data, s.recv(1) == b""
        except (socket.timeout, ConnectionResetError):
            return data, False


def test_refused_before_the_body_is_read_and_the_connection_kept(server):
    """No body ever comes: a server that waited for it would answer 408 after its body timeout (10 s), not 401."""
    head = (b"POST /digits HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")
    data, closed = raw(server[0], head)
    assert data.startswith(b"HTTP/1.1 401 ") and not closed, data[:300]


def test_a_head_over_the_limit_is_431_and_closed_and_harms_nothing(server):
    for size in (MAX_HEADER_BYTES + 1, 10 * 1024 * 1024):
        head = (b"POST /temperature HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"a" * size +
                b"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        data, closed = raw(server[0], head, closed_within=60)
        assert data.startswith(b"HTTP/1.1 431 ") and closed, data[:200]
        assert b"exceed" in data and b"aaaa" not in data
    with httpx.Client(base_url=server[0], timeout=30) as http:
        assert send(http, "/temperature", TOKENS[0]).status_code == 200


def test_a_folded_header_is_a_4xx_not_a_5xx(server):
    head = (b"POST /temperature HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKENS[0].encode() +
            b"\r\n extra\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    data, _ = raw(server[0], head)
    assert data[9:10] == b"4", data[:200]


def metric(url: str, **labels) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("bentoml_service_request_total") and all(f'{k}="{v}"' in line for k, v in labels.items()))


def test_refusals_are_counted_and_logged_and_no_token_is(server):
    url, log = server
    before = {path: metric(url, endpoint=path, http_response_code="401") for path in ("/temperature", "/metadata")}
    start = log.seek(0, 2)
    with httpx.Client(base_url=url, timeout=30) as http:
        send(http, "/temperature", WRONG)
        send(http, "/metadata", WRONG)
        send(http, "/temperature", TOKENS[0])
    counted = lambda: {path: metric(url, endpoint=path, http_response_code="401") for path in before}  # noqa: E731
    expected = {path: n + 1 for path, n in before.items()}
    wait_until(lambda: all(counted()[path] >= n for path, n in expected.items()),
               message=lambda: f"/metrics to count {expected} 401s (counts {counted()})")
    assert counted() == expected  # once each, no more

    def not_logged() -> list[str]:
        log.seek(start)
        lines = log.read().splitlines()
        return [path for path in before if not any(f"path={path}" in l and "status=401" in l for l in lines)]

    wait_until(lambda: not not_logged(), message=lambda: f"access-log lines of the 401s on {not_logged()}")
    log.seek(0)
    text = log.read()
    assert not any(t in text for t in (*TOKENS, WRONG))


def test_both_python_clients_send_a_token(server):
    url = server[0]
    with bentoml.SyncHTTPClient(url, token=TOKENS[0]) as client:
        assert client.temperature(readings=[35.7])["model"] == "temperature-linear"
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    triton = httpclient.InferenceServerClient(urlsplit(url).netloc)
    readings = httpclient.InferInput("readings", [1, 1], "FP64")
    readings.set_data_from_numpy(np.array([[35.7]]))
    answer = triton.infer("temperature-linear", [readings], headers={"Authorization": f"Bearer {TOKENS[1]}"})
    assert answer.as_numpy("celsius").shape == (1, 1)
    with pytest.raises(InferenceServerException, match="bearer token"):
        triton.infer("temperature-linear", [readings])


@pytest.mark.parametrize("content,message", [
    (None, "cannot be read (No such file or directory)"),
    ("", "holds no token"),
    ("short\n", "token 1 is 5 characters"),
    ("dir", "cannot be read (Is a directory)"),
])
def test_a_bad_token_file_stops_the_start_naming_it(tmp_path, content, message):
    path = tmp_path / "tokens"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    status, text = exit_status(REPO, {"SERVICE_API_TOKENS_FILE": str(path)})
    assert status not in (None, 0) and f"SERVICE_API_TOKENS_FILE={path}: {message}" in text, text[-2000:]
