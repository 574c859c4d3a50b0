"""A real `bentoml serve` on a free port with an empty model store, driven by bentoml.SyncHTTPClient."""

import tempfile
from pathlib import Path

import bentoml
import httpx
import numpy as np
import pytest
from PIL import Image

import artifacts
import artifacts.serving

from expected import celsius

REPO = Path(__file__).resolve().parents[2]


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


def test_bentoml_client_chooses_the_digit_model_and_metrics_count_each_models_batches(server, mnist_test_images, tmp_path):
    url, _ = server
    images, labels = mnist_test_images
    path = tmp_path / "seven.png"
    Image.fromarray(images[0]).save(path)
    with bentoml.SyncHTTPClient(url) as client:  # reads /schema.json: the `model` field must be in it
        answers = [client.digit(pixels=images[0].tolist(), model="distilled"),
                   *client.digits(images=images[:3].tolist(), model="distilled"),
                   client.digit_image(image=path, model="distilled")]
    for a in answers:
        a = a if isinstance(a, dict) else a.model_dump()
        assert a["model"] == "mnist-fc-distilled"
    # 1 + 3 + 1 images, counted under the distilled model's label (the committee's batcher saw none of them)
    distilled = artifacts.serving.read().models["mnist-fc-distilled"].default
    assert f'model_batch_images_sum{{model="mnist-fc-distilled",version="{distilled}"}} 5.0' in httpx.get(f"{url}/metrics").text
