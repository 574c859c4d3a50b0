"""The benchmark's peers (harness/peers/): exact pins, venv reuse, the same answers as the service, the answer check, the report section.

The peers' request and response code runs here in-process against the real service (the in-process ASGI
app): bentoml-docs as it is (its pins are the project's), LitServe's LitAPIs and PyTriton's bound
callables with minimal stand-ins for the two frameworks (their venvs are not built in CI: a few minutes
and ~600 MiB). One test serves the bentoml-docs peer for real. `python -m harness.peers` checks every
side's answers over HTTP before it measures.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import sys
import tomllib
import types
from pathlib import Path

import numpy as np
import pytest

from harness import render
from testkit import payloads
from harness.peers import bench, servers, venvs
from testkit.server import request

REPO = Path(__file__).resolve().parents[2]
PEERS_DIR = REPO / "harness" / "peers"
BODIES = bench.bodies()


def project_pins() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(d.split("==") for d in deps)


def service_answer(client, endpoint: str) -> dict:
    p = BODIES[endpoint]
    r = client.post(p.path, content=p.body, headers={"content-type": p.content_type})
    assert r.status_code == 200, r.text
    return bench.comparable(endpoint, r.json())


def load(filename: str, monkeypatch, **stubs: types.ModuleType) -> types.ModuleType:
    """A peer's file as a module, with `stubs` standing in for the framework it imports."""
    for name, module in stubs.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.syspath_prepend(str(PEERS_DIR))  # the peers import onnx_model from beside them
    spec = importlib.util.spec_from_file_location(f"peer_{Path(filename).stem}", PEERS_DIR / filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------- pins and venvs


@pytest.mark.parametrize("name", list(venvs.PEERS))
def test_every_peer_pins_exact_versions(name):
    lines = venvs.pins(venvs.PEERS[name].pins_file)
    assert lines, f"{name}: empty pins file"
    for line in lines:
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+==[0-9][0-9A-Za-z.+\-]*", line), f"{name}: {line!r} is not an exact pin"
    pinned = dict(line.split("==") for line in lines)
    assert pinned["onnxruntime"] == project_pins()["onnxruntime"], f"{name}: another ONNX Runtime than the service's"


def test_bentoml_docs_peer_uses_the_projects_own_pins():
    pinned = dict(line.split("==") for line in venvs.pins(venvs.PEERS["bentoml-docs"].pins_file))
    ours = project_pins()
    assert pinned == {k: ours[k] for k in ("bentoml", "onnxruntime", "numpy", "pydantic")}


def test_a_venv_is_reused_while_its_pins_are_unchanged_and_remade_when_they_change(tmp_path, monkeypatch):
    pins_file = tmp_path / "peer.txt"
    pins_file.write_text("numpy==2.4.6\n")
    peer = venvs.Peer("fake", str(pins_file), f"{sys.version_info.major}.{sys.version_info.minor}")
    monkeypatch.setattr(venvs, "BUILD", tmp_path / "build")
    monkeypatch.setitem(venvs.PEERS, "fake", peer)
    python = venvs.interpreter(peer.python)
    peer.python_bin.parent.mkdir(parents=True)
    peer.python_bin.touch()  # a venv that "exists": ensure() must not run pip while the stamp matches
    (peer.home / "stamp.json").write_text(venvs.stamp(peer, python))
    (peer.home / "build.json").write_text(json.dumps({"seconds": 12.5, "size_mib": 3.0}))
    (peer.home / "freeze.txt").write_text("numpy==2.4.6\n")
    got = venvs.ensure("fake", log=lambda *_: pytest.fail("rebuilt a venv whose pins did not change"))
    assert (got["built_now"], got["build_s"], got["pins"]) == (False, 12.5, ["numpy==2.4.6"])
    before = venvs.stamp(peer, python)
    pins_file.write_text("numpy==2.4.5\n")
    assert venvs.stamp(peer, python) != before, "a changed pins file must force a rebuild"


# ------------------------------------------------------------------------------------- the same answers


def test_bentoml_docs_peer_answers_as_the_service_in_process(client):
    module = load("bentoml_docs.py", pytest.MonkeyPatch())
    peer = module.ThermoDigitsDocs.inner()
    temperature = json.loads(BODIES["temperature"].body)
    digit = json.loads(BODIES["digit"].body)
    assert not bench.differences(service_answer(client, "temperature"), peer.temperature(**temperature).model_dump())
    assert not bench.differences(service_answer(client, "digit"), peer.digit(**digit).model_dump())


def litserve_stubs() -> dict[str, types.ModuleType]:
    class LitAPI:  # what the peer uses of litserve.LitAPI: its constructor's options
        def __init__(self, max_batch_size=1, batch_timeout=0.0, api_path="/predict", **_):
            self.max_batch_size, self.batch_timeout, self.api_path = max_batch_size, batch_timeout, api_path

    class HTTPException(Exception):
        def __init__(self, status_code, detail=None):
            super().__init__(detail)
            self.status_code = status_code

    return {"litserve": types.SimpleNamespace(LitAPI=LitAPI, LitServer=None),
            "fastapi": types.SimpleNamespace(HTTPException=HTTPException)}


def test_litserve_peer_answers_as_the_service_with_its_batching(client, monkeypatch):
    stubs = litserve_stubs()
    module = load("litserve_server.py", monkeypatch, **stubs)
    apis = {api.api_path: api for api in module.apis()}
    assert set(apis) == {"/temperature", "/digit"}
    for api in apis.values():
        api.setup("cpu")
    t = apis["/temperature"]
    got = t.encode_response(t.predict(t.decode_request(json.loads(BODIES["temperature"].body))))
    assert not bench.differences(service_answer(client, "temperature"), got)

    d = apis["/digit"]
    assert (d.max_batch_size, d.batch_timeout) == (64, 0.002)
    one = d.decode_request(json.loads(BODIES["digit"].body))
    batch = np.stack([one, one, one])  # LitServe's default batch of three requests, then its unbatch: list(rows)
    answers = [d.encode_response(row) for row in list(d.predict(batch))]
    for got in answers:
        assert not bench.differences(service_answer(client, "digit"), got)
    with pytest.raises(stubs["fastapi"].HTTPException) as refused:
        d.decode_request({**json.loads(BODIES["digit"].body), "model": "distilled"})
    assert refused.value.status_code == 400


def pytriton_stubs() -> dict[str, types.ModuleType]:
    @dataclasses.dataclass
    class Tensor:
        name: str
        dtype: np.dtype
        shape: tuple

    @dataclasses.dataclass
    class ModelConfig:
        batching: bool = True
        max_batch_size: int = 4
        batcher: object = None

    return {"pytriton": types.ModuleType("pytriton"),
            "pytriton.decorators": types.SimpleNamespace(batch=lambda f: f),  # one request: already "a batch"
            "pytriton.model_config": types.SimpleNamespace(Tensor=Tensor, ModelConfig=ModelConfig,
                                                          DynamicBatcher=lambda **kw: kw),
            "pytriton.triton": types.SimpleNamespace(Triton=None, TritonConfig=None)}


@pytest.mark.parametrize("name, endpoint, batching", [("mnist-fc", "v2_mnist_fc", True),
                                                      ("temperature-linear", "v2_temperature_linear", False)])
def test_triton_peer_binds_the_services_v2_tensors_and_answers_as_it(client, monkeypatch, name, endpoint, batching):
    stubs = pytriton_stubs()
    module = load("pytriton_server.py", monkeypatch, **stubs)
    bound = {}
    module.bind(types.SimpleNamespace(bind=lambda **kw: bound.update(kw)), name,
                stubs["pytriton.model_config"].ModelConfig(batching=batching, max_batch_size=64 if batching else 0))
    meta = client.get(f"/v2/models/{name}").json()  # the service's v2 metadata

    def as_v2(tensors):  # how Triton reports a PyTriton Tensor: the batch dimension first when batching
        return [{"name": t.name, "datatype": {"float32": "FP32", "float64": "FP64"}[np.dtype(t.dtype).name],
                 "shape": [-1, *t.shape] if batching else list(t.shape)} for t in tensors]

    assert (as_v2(bound["inputs"]), as_v2(bound["outputs"])) == (meta["inputs"], meta["outputs"])
    (sent,) = json.loads(BODIES[endpoint].body)["inputs"]
    x = np.asarray(sent["data"], dtype={"FP32": np.float32, "FP64": np.float64}[sent["datatype"]]).reshape(sent["shape"])
    (out_spec,) = meta["outputs"]
    y = bound["infer_func"](**{sent["name"]: x})[out_spec["name"]]
    got = {"outputs": [{"name": out_spec["name"], "datatype": out_spec["datatype"], "shape": list(y.shape),
                        "data": y.ravel().tolist()}]}
    assert not bench.differences(service_answer(client, endpoint), got)


def test_the_bentoml_docs_peer_serves_the_services_answers(client, tmp_path):
    """For real: `bentoml serve` of the peer by this Python (its pins are the project's), over HTTP."""
    server = servers.start_bentoml_docs(tmp_path, python=sys.executable)
    try:
        server.wait_ready(60, poll=0.2)
        for endpoint in ("temperature", "digit"):
            p = BODIES[endpoint]
            status, body = request(server.url, "POST", p.path, p.body, p.content_type)
            assert status == 200, body
            assert not bench.differences(service_answer(client, endpoint), json.loads(body)), endpoint
    finally:
        server.stop()
    assert not server.scratch[0].exists(), "its BENTOML_HOME was left behind"


# ---------------------------------------------------------------------------------- the answer check


def test_differences_finds_another_digit_a_drifted_float_and_a_missing_field(client):
    reference = service_answer(client, "digit")
    assert bench.differences(reference, json.loads(json.dumps(reference))) == []
    other = {**reference, "digit": (reference["digit"] + 1) % 10}
    assert bench.differences(reference, other) == [f".digit: {other['digit']}, expected {reference['digit']}"]
    drifted = {**reference, "probabilities": [p * 1.001 for p in reference["probabilities"]]}
    assert len(bench.differences(reference, drifted)) == 10
    assert "keys" in bench.differences(reference, {k: v for k, v in reference.items() if k != "version"})[0]
    close = {**reference, "confidence": reference["confidence"] * (1 + 1e-7)}  # float32 summed in another order
    assert bench.differences(reference, close) == []


def test_v2_answers_compare_their_outputs_not_the_model_version():
    ours = {"model_name": "mnist-fc", "model_version": "73bbf6a747230b2a",
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]}]}
    tritons = {**ours, "model_version": "1"}
    assert bench.differences(bench.comparable("v2_mnist_fc", ours), bench.comparable("v2_mnist_fc", tritons)) == []
    wrong = {**ours, "outputs": [{**ours["outputs"][0], "shape": [2, 1]}]}
    assert bench.differences(bench.comparable("v2_mnist_fc", ours), bench.comparable("v2_mnist_fc", wrong))


def test_v2_bodies_carry_the_benchmarks_readings_and_digit():
    typed, v2 = payloads.bench_payloads(), payloads.v2_payloads()
    (readings,) = json.loads(v2["v2_temperature_linear"].body)["inputs"]
    assert readings["data"] == json.loads(typed["temperature"].body)["readings"]
    (images,) = json.loads(v2["v2_mnist_fc"].body)["inputs"]
    pixels = np.asarray(json.loads(typed["digit"].body)["pixels"], np.float64)
    assert np.array_equal(np.asarray(images["data"], np.float32), (pixels / 255).astype(np.float32).ravel())


# ------------------------------------------------------------------------------------------ the report


def test_peers_section_states_each_goal_against_each_peer():
    def row(side, endpoint, c, rps, p99):
        return {"side": side, "endpoint": endpoint, "concurrency": c, "rps": rps, "p50_ms": p99 / 2, "p90_ms": p99 / 1.5,
                "p99_ms": p99, "max_ms": p99 * 2, "non_2xx": 0, "transport_errors": 0, "server_cpu_ms_per_req": 1.0}

    results = {
        "command": ".venv/bin/python -m harness.peers", "date": "2026-12-02T00:00:00+00:00", "duration_s": 5,
        "rounds": 3, "warmup_s": 1, "triton_queue_delay_us": 0,
        "machine": {"cpu": "cpu", "cores": 2, "loadavg_at_start": [0.1, 0.1, 0.1], "git": "abc"},
        "peers": {"litserve": {"pins": ["litserve==0.2.19"]}, "triton": {"pins": ["nvidia-pytriton==0.7.0"]}},
        "cells": [{"endpoint": "digit", "concurrency": 64, "sides": ["service", "litserve", "baseline"], "goal": True,
                   "path": "/digit"},
                  {"endpoint": "v2_mnist_fc", "concurrency": 64, "sides": ["service", "triton"], "goal": True,
                   "path": "/v2/models/mnist-fc/infer"}],
        "table": [row("service", "digit", 64, 900, 80), row("litserve", "digit", 64, 1000, 90),
                  row("baseline", "digit", 64, 500, 200), row("service", "v2_mnist_fc", 64, 800, 50),
                  row("triton", "v2_mnist_fc", 64, 700, 40)],
        "same_answers": {"digit": {"service": True, "litserve": True, "baseline": True}},
        "idle_cpu_cores": {"service": 0.002, "litserve": 0.081},
    }
    goals = {g: met for g, _, _, met in render.peer_goals(results)}
    assert goals == {"digit c=64: service vs litserve, 2xx/s": False, "digit c=64: service vs litserve, p99 ms": True,
                     "v2_mnist_fc c=64: service vs triton, 2xx/s": True, "v2_mnist_fc c=64: service vs triton, p99 ms": False}
    text = render.peers_section(results)
    assert "| digit | `/digit` | 64 | litserve | 1,000 |" in text and "| 0.90 |" in text  # service ÷ litserve
    assert "nvidia-pytriton==0.7.0" in text and text.count("**no**") == 2
    assert "litserve 0.08" in text


def test_a_grpc_run_s_line_shows_how_its_connections_fell_on_several_workers():
    assert bench.split_note({"connections_per_worker": [5, 3]}) == "  connections 5/3"
    assert bench.split_note({"connections_per_worker": [8]}) == ""
    assert bench.split_note({}) == ""
    assert bench.split_note({"connections_per_worker": [0, 0]}) == ""
