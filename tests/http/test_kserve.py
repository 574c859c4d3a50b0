"""A client nobody here wrote, KServe's Python SDK (InferenceRESTClient with protocol v2, in its own process of the clients' venv: testkit/clients.py), drives the v2 endpoints of a real `bentoml serve`."""

import tempfile
from pathlib import Path

import httpx
import pytest

import artifacts
from expected import check_v2_output, v2_cases
from testkit import clients

REPO = Path(__file__).resolve().parents[2]
LINEAR, MLP = artifacts.TEMPERATURE_LINEAR, artifacts.TEMPERATURE_MLP
READINGS = [-1000.0, 21.8, 35.7, 55.9, 81.9, 1000.0]


@pytest.fixture(scope="module")
def server(serve):
    with serve(".", REPO, tempfile.mkdtemp(prefix="bentoml-home-kserve-")) as running:
        yield running


@pytest.fixture(scope="module")
def expected(server, mnist_test_images):
    """By model: (the v2 input tensor to send, the typed endpoint's answer as a flat list)."""
    with httpx.Client(base_url=server[0], timeout=60) as http:
        return v2_cases(lambda path, body: http.post(path, json=body).json(), mnist_test_images[0], READINGS)


def test_every_model_json_and_binary_equals_the_typed_endpoints(server, expected, oip_clients):
    requests = []
    for name in artifacts.MODEL_NAMES:
        tensor, _ = expected[name]
        output = artifacts.model(name).task.output.name
        for raw in (False, True):  # binary: inputs and the output as binary tensor data
            requests.append({"model": name, "id": f"{name}-{raw}", "inputs": [{**tensor, "raw": raw}],
                             "outputs": [{"name": output, "binary": raw}]})
        requests.append({"model": name, "inputs": [{**tensor, "raw": False}]})  # no outputs listed: all, as JSON
    results = clients.run(oip_clients, "kserve_rest", {"url": server[0], "requests": requests})
    assert len(results) == 3 * len(artifacts.MODEL_NAMES)
    for i, name in enumerate(artifacts.MODEL_NAMES):
        _, want = expected[name]
        for result, raw in zip(results[3 * i:3 * i + 3], (False, True, False)):
            assert result["ok"], result
            assert result["model_name"] == name  # (the SDK's InferResponse.from_bytes drops model_version)
            [out] = result["outputs"]
            check_v2_output(out, name, want, raw, len(READINGS))
        assert results[3 * i]["id"] == f"{name}-False" and results[3 * i + 1]["id"] == f"{name}-True"
        assert results[3 * i + 2]["id"]  # the SDK makes up a UUID; it comes back


def test_a_body_naming_another_model_is_400_naming_both(server, expected, oip_clients):
    tensor, _ = expected[LINEAR]
    requests = [{"model": LINEAR, "body_model": MLP, "inputs": [{**tensor, "raw": raw}]} for raw in (False, True)]
    for result in clients.run(oip_clients, "kserve_rest", {"url": server[0], "requests": requests}):
        assert result == {"ok": False, "status": 400,
                          "message": f"model_name: the body names model '{MLP}' but the path names '{LINEAR}'; "
                                     "send the same name or leave model_name out"}
