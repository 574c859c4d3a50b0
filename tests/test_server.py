"""A real `bentoml serve` on a free port with an empty model store, driven by bentoml.SyncHTTPClient."""

import tempfile
from pathlib import Path

import bentoml
import httpx
import numpy as np
import pytest
from PIL import Image

from expected import celsius

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(serve):
    # An empty store: the committed models must be imported on start.
    with serve(".", REPO, tempfile.mkdtemp(prefix="bentoml-home-serve-")) as running:
        yield running


def test_temperature_matches_the_closed_form_line(server):
    url, _ = server
    readings = [-1000.0, 21.8, 35.7, 55.9, 81.9, 1000.0]
    with bentoml.SyncHTTPClient(url) as client:
        result = client.temperature(readings=readings)
    celsius_ = result["celsius"] if isinstance(result, dict) else result.celsius
    np.testing.assert_allclose(celsius_, celsius(readings), atol=1e-3)


def test_start_logs_backend_and_device(server):
    _, log = server
    log.seek(0)
    text = log.read()
    assert "loaded mnist-fc:" in text and "with onnx on cpu" in text


def test_uploaded_pngs_agree_with_raw_pixels(server, mnist_test_images, tmp_path):
    url, _ = server
    images, labels = mnist_test_images
    with bentoml.SyncHTTPClient(url) as client:
        for i in range(10):
            image = images[i]
            raw = client.digit(pixels=image.tolist())
            raw_digit = raw["digit"] if isinstance(raw, dict) else raw.digit
            for variant, array in (("as-is", image), ("inverted", 255 - image),
                                   ("upscaled", np.asarray(Image.fromarray(image).resize((200, 200), Image.BICUBIC)))):
                path = tmp_path / f"{i}-{variant}.png"
                Image.fromarray(array).save(path)
                got = client.digit_image(image=path)
                got_digit = got["digit"] if isinstance(got, dict) else got.digit
                assert got_digit == raw_digit, (i, variant)
            assert raw_digit == labels[i]


def test_bad_requests_do_not_hurt_the_server(server):
    url, _ = server
    assert httpx.post(f"{url}/temperature", content=b"[1, 2", headers={"content-type": "application/json"}).status_code == 400
    assert httpx.post(f"{url}/digit/image", files={"file": ("x.png", b"\x89PNG\r\n", "image/png")}).status_code == 400
    r = httpx.post(f"{url}/temperature", json={"readings": [35.7]})
    assert r.status_code == 200 and r.json()["model"] == "temperature-linear"
    assert httpx.get(f"{url}/readyz").status_code == 200
    assert httpx.get(f"{url}/metadata").json()["models"]["mnist-fc"]["name"] == "mnist-fc"
