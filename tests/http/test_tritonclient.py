"""A client nobody here wrote, NVIDIA's tritonclient (HTTP), drives the v2 endpoints of a real `bentoml serve`."""

import tempfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import artifacts
import artifacts.serving

REPO = Path(__file__).resolve().parents[2]
LINEAR, MLP, MNIST = artifacts.TEMPERATURE_LINEAR, artifacts.TEMPERATURE_MLP, artifacts.MNIST
VERSION = {name: artifacts.read_metadata(artifacts.serving.default_dir(name))["version"] for name in artifacts.MODEL_NAMES}
READINGS = np.array([[-1000.0], [21.8], [35.7], [55.9], [81.9], [1000.0]])


@pytest.fixture(scope="module")
def server(serve):
    with serve(".", REPO, tempfile.mkdtemp(prefix="bentoml-home-triton-")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    c = httpclient.InferenceServerClient(url=server[0].removeprefix("http://"))
    yield c
    c.close()


@pytest.fixture(scope="module")
def typed(server):
    """POST to the typed endpoints (/temperature, /digits): what the v2 answers must equal."""
    with httpx.Client(base_url=server[0], timeout=60) as http:
        yield lambda path, body: http.post(path, json=body).json()


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata()["name"] == "thermo-digits"
    for name in artifacts.MODEL_NAMES:
        assert client.is_model_ready(name) and client.is_model_ready(name, VERSION[name])
        meta = client.get_model_metadata(name)
        assert meta == client.get_model_metadata(name, VERSION[name])
        assert meta["versions"] == [VERSION[name]] and meta["platform"] == "onnxruntime_onnx"
    assert client.get_model_metadata(MNIST)["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert client.get_model_metadata(LINEAR)["outputs"] == [{"name": "celsius", "datatype": "FP64", "shape": [-1, 1]}]
    assert not client.is_model_ready("resnet")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("name,short", [(LINEAR, "linear"), (MLP, "mlp")])
def test_temperature(client, typed, name, short, binary):
    x = httpclient.InferInput("readings", list(READINGS.shape), "FP64")
    x.set_data_from_numpy(READINGS, binary_data=binary)
    result = client.infer(name, [x], outputs=[httpclient.InferRequestedOutput("celsius", binary_data=binary)],
                          request_id="t-1")
    expected = typed("/temperature", {"readings": READINGS.ravel().tolist(), "model": short})["celsius"]
    celsius = result.as_numpy("celsius")
    assert celsius.dtype == np.float64 and celsius.shape == (len(READINGS), 1)
    assert celsius.ravel().tolist() == expected
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (name, VERSION[name], "t-1")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_digits(client, typed, mnist_test_images, binary):
    raw, labels = mnist_test_images
    images = (raw[:32].astype(np.float64) / 255).astype(np.float32).reshape(32, 1, 28, 28)
    x = httpclient.InferInput("images", list(images.shape), "FP32")
    x.set_data_from_numpy(images, binary_data=binary)
    result = client.infer(MNIST, [x], model_version=VERSION[MNIST],
                          outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=binary)])
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32 and probabilities.shape == (32, 10)
    expected = np.array([p["probabilities"] for p in typed("/digits", {"images": raw[:32].tolist()})])
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-6)
    assert (probabilities.argmax(1) == expected.argmax(1)).all()
    assert (probabilities.argmax(1) == labels[:32]).mean() >= 0.9


def test_default_request_asks_for_binary_outputs(client):
    """With no outputs listed tritonclient sets binary_data_output: the answer comes back as binary data."""
    x = httpclient.InferInput("readings", [2, 1], "FP64")
    x.set_data_from_numpy(READINGS[:2])
    result = client.infer(LINEAR, [x])
    assert result.get_response()["outputs"][0]["parameters"] == {"binary_data_size": 16}
    assert result.as_numpy("celsius").shape == (2, 1)


def test_errors_reach_the_client_as_exceptions_with_the_message(client):
    x = httpclient.InferInput("readings", [1, 1], "FP64")
    x.set_data_from_numpy(np.array([[1.0]]), binary_data=False)
    with pytest.raises(InferenceServerException, match="no model named 'resnet'") as e:
        client.infer("resnet", [x])
    assert e.value.status() == "404"
    wrong = httpclient.InferInput("images", [1, 1, 28, 28], "FP64")
    wrong.set_data_from_numpy(np.zeros((1, 1, 28, 28)))
    with pytest.raises(InferenceServerException, match="'images' is FP32, got 'FP64'") as e:
        client.infer(MNIST, [wrong])
    assert e.value.status() == "400"
    with pytest.raises(InferenceServerException, match="classification extension is not supported"):
        client.infer(LINEAR, [x], outputs=[httpclient.InferRequestedOutput("celsius", class_count=1)])
