"""Clients nobody here wrote, tritonclient.grpc and KServe's InferenceGRPCClient (each in its own process of the clients' venv, testkit/clients.py), against the gRPC service of a real `bentoml serve`: the typed endpoints' answers for every model, and tokens."""

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import artifacts
import artifacts.serving
from expected import check_v2_output, v2_cases
from testkit import clients
from testkit.server import serving

REPO = Path(__file__).resolve().parents[2]

LINEAR, MLP, MNIST = artifacts.TEMPERATURE_LINEAR, artifacts.TEMPERATURE_MLP, artifacts.MNIST
VERSION = {name: artifacts.read_metadata(artifacts.serving.default_dir(name))["version"] for name in artifacts.MODEL_NAMES}
READINGS = [-1000.0, 21.8, 35.7, 55.9, 81.9, 1000.0]
TOKEN = "test-token-0123456789abcdef"


@dataclass
class Target:
    target: str  # host:port of the gRPC service


@pytest.fixture(scope="module")
def server():
    with serving(".", REPO, tempfile.mkdtemp(prefix="bentoml-home-grpc-")) as running_server:
        yield Target(running_server.grpc_target)


@pytest.fixture(scope="module")
def expected(client, mnist_test_images):
    """By model: (the v2 input tensor to send, the typed endpoint's answer (in-process) as a flat list)."""
    return v2_cases(lambda path, body: client.post(path, json=body).json(), mnist_test_images[0], READINGS)


def check(result: dict, name: str, want: list, raw: bool) -> None:
    assert result["ok"], result
    assert (result["model_name"], result["model_version"]) == (name, VERSION[name])
    [out] = result["outputs"]
    check_v2_output(out, name, want, raw, len(READINGS))


def test_tritonclient_grpc(server, expected, oip_clients):
    calls = [{"call": "live"}, {"call": "ready"}, {"call": "server_metadata"},
             *({"call": "model_ready", "model": name, "version": VERSION[name]} for name in artifacts.MODEL_NAMES),
             {"call": "model_metadata", "model": MNIST}]
    for name in artifacts.MODEL_NAMES:  # tritonclient.grpc sends raw_input_contents and reads raw_output_contents
        tensor, _ = expected[name]
        calls.append({"call": "infer", "model": name, "id": f"id-{name}", "inputs": [tensor]})
        calls.append({"call": "infer", "model": name, "version": VERSION[name], "priority": 3,  # Triton's uint64
                      "outputs": [{"name": artifacts.model(name).task.output.name}], "inputs": [tensor]})
    calls += [{"call": "model_ready", "model": "resnet"},
              {"call": "infer", "model": MNIST, "inputs": [{**expected[LINEAR][0], "name": "images"}]}]
    results = clients.run(oip_clients, "triton_grpc", {"url": server.target, "calls": calls})
    assert [r["ok"] for r in results[:3]] == [True] * 3 and results[0]["live"] and results[1]["ready"]
    assert results[2]["name"] == "thermo-digits"
    assert all(r == {"ok": True, "ready": True} for r in results[3:3 + len(artifacts.MODEL_NAMES)])
    meta = results[3 + len(artifacts.MODEL_NAMES)]
    assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": ["-1", "1", "28", "28"]}]  # int64: JSON strings
    infers = results[4 + len(artifacts.MODEL_NAMES):-2]
    for i, name in enumerate(artifacts.MODEL_NAMES):
        for result in infers[2 * i:2 * i + 2]:
            check(result, name, expected[name][1], raw=True)
        assert infers[2 * i]["id"] == f"id-{name}"
    unknown, wrong = results[-2:]
    assert (unknown["ok"], unknown["code"]) == (False, "StatusCode.NOT_FOUND") and "no model named 'resnet'" in unknown["message"]
    assert (wrong["ok"], wrong["code"]) == (False, "StatusCode.INVALID_ARGUMENT")
    assert "inputs[0].datatype: mnist-fc's input 'images' is FP32, got 'FP64'" in wrong["message"]


def test_kserve_grpc_client(server, expected, oip_clients):
    calls = [{"call": "live"}, {"call": "ready"}, *({"call": "model_ready", "model": n} for n in artifacts.MODEL_NAMES)]
    for name in artifacts.MODEL_NAMES:  # numpy data goes raw, a list goes in contents
        tensor, _ = expected[name]
        for raw in (True, False):
            calls.append({"call": "infer", "model": name, "id": f"{name}-{raw}", "inputs": [{**tensor, "raw": raw}]})
    calls.append({"call": "infer", "model": LINEAR, "version": VERSION[MLP],
                  "inputs": [{**expected[LINEAR][0], "raw": True}]})
    results = clients.run(oip_clients, "kserve_grpc", {"url": server.target, "calls": calls})
    assert results[:2] == [{"ok": True, "live": True}, {"ok": True, "ready": True}]
    assert all(r == {"ok": True, "ready": True} for r in results[2:2 + len(artifacts.MODEL_NAMES)])
    infers = results[2 + len(artifacts.MODEL_NAMES):-1]
    for i, name in enumerate(artifacts.MODEL_NAMES):
        for result, raw in zip(infers[2 * i:2 * i + 2], (True, False)):
            check(result, name, expected[name][1], raw=raw)  # raw in, raw out; contents in, contents out
            assert result["id"] == f"{name}-{raw}"
    wrong_version = results[-1]
    assert (wrong_version["ok"], wrong_version["code"]) == (False, "NOT_FOUND")
    assert wrong_version["message"] == (f"model '{LINEAR}' has no version '{VERSION[MLP]}' loaded; "
                                        f"it serves {VERSION[LINEAR]} (default)")


def test_kserve_grpc_client_with_a_token(expected, oip_clients):
    call = {"call": "infer", "model": LINEAR, "inputs": [{**expected[LINEAR][0], "raw": True}]}
    with serving(".", REPO, tempfile.mkdtemp(prefix="bentoml-home-grpc-"), env={"SERVICE_API_TOKENS": TOKEN}) as tokened:
        refused, = clients.run(oip_clients, "kserve_grpc", {"url": tokened.grpc_target, "calls": [call]})
        answered, = clients.run(oip_clients, "kserve_grpc", {"url": tokened.grpc_target, "calls": [call],
                                                             "headers": {"authorization": f"Bearer {TOKEN}"}})
    assert (refused["ok"], refused["code"]) == (False, "UNAUTHENTICATED")
    assert refused["message"].startswith("this route needs a bearer token")
    assert refused["trailing"]["www-authenticate"] == 'Bearer realm="thermo-digits"'
    check(answered, LINEAR, expected[LINEAR][1], raw=True)
