"""The Open Inference Protocol v2 (service/v2/) against a real `bentoml serve`, and its parsing in process."""

import json
import tempfile
from pathlib import Path

import bentoml
import httpx
import jsonschema_rs
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

import artifacts
import artifacts.serving
from service.api.errors import ERROR_SCHEMA
from service.core import plane as data_plane
from service.core.errors import ServingError
from service.v2 import rest as v2, schemas as v2_schemas
DIGIT_MODELS = {choice: m.name for choice, m in artifacts.choices(artifacts.DIGITS).items()}

REPO = Path(__file__).resolve().parents[2]
LINEAR, MLP, MNIST = artifacts.TEMPERATURE_LINEAR, artifacts.TEMPERATURE_MLP, artifacts.MNIST
MODELS = {name: artifacts.read_metadata(artifacts.serving.default_dir(name)) for name in artifacts.MODEL_NAMES}
VERSION = {name: m["version"] for name, m in MODELS.items()}
HEADER = "Inference-Header-Content-Length"
ERROR = jsonschema_rs.validator_for(ERROR_SCHEMA)


@pytest.fixture(scope="module")
def server(serve):
    with serve(".", REPO, tempfile.mkdtemp(prefix="bentoml-home-v2-")) as running:
        yield running


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server[0], timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def docs(http):
    return http.get("/docs.json").json()


def schema_validator(docs: dict, name: str):
    """A validator for one of the document's component schemas (its $refs resolved within the document)."""
    return jsonschema_rs.validator_for({"$ref": f"#/components/schemas/{name}", "components": docs["components"]})


def readings(values, **extra) -> dict:
    return {"inputs": [{"name": "readings", "shape": [len(values), 1], "datatype": "FP64", "data": list(values)}],
            **extra}


def images(batch: np.ndarray, nested: bool = False, **extra) -> dict:
    data = batch.tolist() if nested else batch.ravel().tolist()
    return {"inputs": [{"name": "images", "shape": list(batch.shape), "datatype": "FP32", "data": data}], **extra}


def infer(http, model: str, body, version: str | None = None, **kwargs) -> httpx.Response:
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    if isinstance(body, bytes):
        return http.post(path, content=body, headers={"content-type": "application/json", **kwargs.pop("headers", {})},
                         **kwargs)
    return http.post(path, json=body, **kwargs)


def binary_body(head: dict, *blobs: bytes) -> tuple[bytes, dict]:
    text = json.dumps(head).encode()
    return text + b"".join(blobs), {HEADER: str(len(text))}


def split_response(r: httpx.Response) -> tuple[dict, bytes]:
    assert r.headers["content-type"] == "application/octet-stream"
    n = int(r.headers[HEADER])
    return json.loads(r.content[:n]), r.content[n:]


def assert_error(r: httpx.Response, status: int, *fragments: str) -> None:
    assert r.status_code == status, r.text
    ERROR.validate(r.json())
    assert set(r.json()) == {"error"}
    for fragment in fragments:
        assert fragment in r.json()["error"], r.json()["error"]


def mnist_batch(mnist_test_images, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(0-255 uint8 images, the same as float32 in [0, 1] shaped [n, 1, 28, 28], labels)."""
    raw, labels = mnist_test_images
    return raw[:n], (raw[:n].astype(np.float64) / 255).astype(np.float32).reshape(n, 1, 28, 28), labels[:n]


# --------------------------------------------------------------------------------------------- metadata, health


def test_server_metadata_and_health(http, docs):
    meta = http.get("/v2").json()
    assert meta == {"name": "thermo-digits", "version": data_plane.SERVER_VERSION,
                    "extensions": ["binary_tensor_data", "model_repository"]}
    schema_validator(docs, "V2ServerMetadata").validate(meta)
    assert http.get("/v2/health/live").json() == {"live": True}
    assert http.get("/v2/health/ready").json() == {"ready": True}


@pytest.mark.parametrize("name", artifacts.MODEL_NAMES)
def test_model_metadata_comes_from_metadata_json(http, docs, name):
    spec = MODELS[name]
    meta = http.get(f"/v2/models/{name}").json()
    assert meta == http.get(f"/v2/models/{name}/versions/{VERSION[name]}").json()
    schema_validator(docs, "V2ModelMetadata").validate(meta)
    datatype = {"float32": "FP32", "float64": "FP64"}
    assert meta == {
        "name": name, "versions": [spec["version"]], "platform": "onnxruntime_onnx",
        "inputs": [{"name": t["name"], "datatype": datatype[t["dtype"]], "shape": t["shape"]} for t in spec["inputs"]],
        "outputs": [{"name": t["name"], "datatype": datatype[t["dtype"]], "shape": t["shape"]} for t in spec["outputs"]],
    }
    for path in (f"/v2/models/{name}/ready", f"/v2/models/{name}/versions/{VERSION[name]}/ready"):
        r = http.get(path)
        assert r.status_code == 200 and r.json() == {"ready": True}


@pytest.mark.parametrize("suffix", ["", "/ready"])
def test_unknown_model_or_version_is_404_naming_what_exists(http, suffix):
    assert_error(http.get(f"/v2/models/resnet{suffix}"), 404, "'resnet'", "mnist-fc, mnist-fc-distilled, temperature-linear, temperature-mlp")
    assert_error(http.get(f"/v2/models/{MNIST}/versions/1{suffix}"), 404, "no version '1' loaded", VERSION[MNIST])
    # another model's version is not this model's
    assert_error(http.get(f"/v2/models/{MNIST}/versions/{VERSION[LINEAR]}{suffix}"), 404, VERSION[MNIST])


def test_unknown_model_or_version_on_infer_is_404(http):
    assert_error(infer(http, "resnet", readings([1.0])), 404, "no model named 'resnet'")
    assert_error(infer(http, LINEAR, readings([1.0]), version=VERSION[MLP]), 404, f"serves {VERSION[LINEAR]} (default)")
    assert_error(http.get(f"/v2/models/{MNIST}/infer"), 405)


# --------------------------------------------------------------------------------------------- predictions


@pytest.mark.parametrize("name,short", [(LINEAR, "linear"), (MLP, "mlp")])
def test_temperatures_equal_the_typed_endpoint(http, docs, name, short):
    values = [-1000.0, 21.8, 35.7, 55.9, 81.9, 1000.0, 1e300, -1.7e308]
    typed = http.post("/temperature", json={"readings": values, "model": short}).json()
    for version in (None, VERSION[name]):
        r = infer(http, name, readings(values), version=version)
        assert r.status_code == 200, r.text
        body = r.json()
        schema_validator(docs, "V2InferResponse").validate(body)
        assert body == {"model_name": name, "model_version": typed["version"],
                        "outputs": [{"name": "celsius", "datatype": "FP64", "shape": [len(values), 1],
                                     "data": typed["celsius"]}]}


@pytest.mark.parametrize("field,name", DIGIT_MODELS.items())
def test_digits_equal_the_typed_endpoint_flat_nested_and_binary(http, mnist_test_images, field, name):
    raw, batch, labels = mnist_batch(mnist_test_images, 16)
    typed = np.array([p["probabilities"] for p in http.post("/digits", json={"images": raw.tolist(), "model": field}).json()])
    flat = infer(http, name, images(batch)).json()
    nested = infer(http, name, images(batch, nested=True)).json()
    assert flat == nested and (flat["model_name"], flat["model_version"]) == (name, VERSION[name])
    out = flat["outputs"][0]
    assert (out["name"], out["datatype"], out["shape"]) == ("probabilities", "FP32", [16, 10])
    probabilities = np.array(out["data"]).reshape(16, 10)
    np.testing.assert_allclose(probabilities, typed, rtol=0, atol=1e-6)  # batched with others: same up to rounding
    assert (probabilities.argmax(1) == typed.argmax(1)).all()
    assert (probabilities.argmax(1) == labels).mean() >= 0.9

    head = {"inputs": [{"name": "images", "shape": [16, 1, 28, 28], "datatype": "FP32",
                        "parameters": {"binary_data_size": batch.nbytes}}], "parameters": {"binary_data_output": True}}
    body, headers = binary_body(head, batch.astype("<f4").tobytes())
    r = infer(http, name, body, headers={**headers, "content-type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    meta, tail = split_response(r)
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [16, 10],
                                "parameters": {"binary_data_size": 640}}]
    np.testing.assert_array_equal(np.frombuffer(tail, "<f4").reshape(16, 10), np.float32(probabilities))


def test_id_is_echoed_and_outputs_can_be_chosen(http):
    r = infer(http, LINEAR, readings([35.7], id="req-7", outputs=[{"name": "celsius"}])).json()
    assert r["id"] == "req-7" and [o["name"] for o in r["outputs"]] == ["celsius"]
    assert infer(http, LINEAR, readings([35.7], id="")).json()["id"] == ""
    assert "id" not in infer(http, LINEAR, readings([35.7])).json()
    # unknown parameters are ignored (Triton's sequence_id, priority, timeout, ...)
    assert infer(http, LINEAR, readings([35.7], parameters={"priority": 1, "x": "y"})).status_code == 200


def test_body_may_repeat_the_paths_model_name_and_version(http):
    """KServe's SDK puts model_name in every body; a name or version other than the path's is refused naming both."""
    expected = infer(http, LINEAR, T).json()["outputs"]
    named = {**T, "model_name": LINEAR, "model_version": VERSION[LINEAR]}
    for version in (None, VERSION[LINEAR]):
        r = infer(http, LINEAR, named, version=version)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"] == expected
    assert_error(infer(http, LINEAR, {**T, "model_name": MLP}), 400,
                 f"model_name: the body names model '{MLP}' but the path names '{LINEAR}'")
    assert_error(infer(http, LINEAR, {**T, "model_name": MLP}, version=VERSION[LINEAR]), 400, f"'{MLP}'", f"'{LINEAR}'")
    assert_error(infer(http, LINEAR, {**T, "model_version": VERSION[MLP]}, version=VERSION[LINEAR]), 400,
                 f"model_version: the body names version '{VERSION[MLP]}' but the path names '{VERSION[LINEAR]}'")
    # where the path names no version, the body's stands in its place: 404 as for a path
    assert_error(infer(http, LINEAR, {**T, "model_version": "1"}), 404,
                 f"model '{LINEAR}' has no version '1' loaded; it serves {VERSION[LINEAR]} (default)")
    assert_error(infer(http, LINEAR, {**T, "model_name": 7}), 400, "model_name: Input should be a valid string")
    assert_error(infer(http, LINEAR, {**T, "model_version": None}), 400, "model_version: Input should be a valid string")


def test_mlserver_request_fields_are_accepted(http):
    """The body mlserver 1.7.1's request model makes (NumpyRequestCodec.encode_request(...).model_dump_json(), seen
    by hand: mlserver cannot share the clients' venv with kserve, nor install on Python 3.13): content_type
    parameters on the request, input and output, ignored; its `headers` parameter (an object) is not a protocol
    scalar."""
    body = {"id": "m-1", "parameters": {"content_type": "np"},
            "inputs": [{"name": "readings", "shape": [2, 1], "datatype": "FP64", "parameters": {"content_type": "np"},
                        "data": [35.7, 55.9]}],
            "outputs": [{"name": "celsius", "parameters": {"content_type": "np"}}]}
    r = infer(http, LINEAR, body)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"] == infer(http, LINEAR, T).json()["outputs"] and r.json()["id"] == "m-1"
    assert_error(infer(http, LINEAR, {**body, "parameters": {"headers": {"x": "y"}}}), 400,
                 "parameters.headers: a parameter must be a string, a finite number or a boolean")


def test_binary_outputs_per_output_or_per_request(http):
    values = [35.7, 55.9, 58.2]
    expected = infer(http, LINEAR, readings(values)).json()["outputs"][0]["data"]
    for extra in ({"outputs": [{"name": "celsius", "parameters": {"binary_data": True}}]},
                  {"parameters": {"binary_data_output": True}},
                  {"parameters": {"binary_data_output": False}, "outputs": [{"name": "celsius", "parameters": {"binary_data": True}}]}):
        meta, tail = split_response(infer(http, LINEAR, readings(values, **extra)))
        assert meta["outputs"][0]["parameters"] == {"binary_data_size": 24} and "data" not in meta["outputs"][0]
        assert np.frombuffer(tail, "<f8").tolist() == expected
    # the output's own false wins over the request's true
    r = infer(http, LINEAR, readings(values, parameters={"binary_data_output": True},
                                     outputs=[{"name": "celsius", "parameters": {"binary_data": False}}]))
    assert r.headers["content-type"] == "application/json" and r.json()["outputs"][0]["data"] == expected


def test_binary_input_with_no_content_type_as_tritonclient_sends(http):
    x = np.array([35.7, 55.9])
    body, headers = binary_body({"inputs": [{"name": "readings", "shape": [2, 1], "datatype": "FP64",
                                             "parameters": {"binary_data_size": 16}}]}, x.astype("<f8").tobytes())
    request = http.build_request("POST", f"/v2/models/{LINEAR}/infer", content=body, headers=headers)
    assert "content-type" not in request.headers  # as tritonclient: no Content-Type at all
    r = http.send(request)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == infer(http, LINEAR, readings(x.tolist())).json()["outputs"][0]["data"]


# --------------------------------------------------------------------------------------------- bad input

T = readings([35.7, 55.9])
BINARY = np.array([35.7, 55.9]).astype("<f8").tobytes()
HEAD = {"inputs": [{"name": "readings", "shape": [2, 1], "datatype": "FP64", "parameters": {"binary_data_size": 16}}]}
HEAD_LENGTH = len(json.dumps(HEAD))
ONE = {"name": "images", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}
NO_DATA = {k: v for k, v in ONE.items() if k != "data"}


def tensor(**changes) -> dict:
    return {"inputs": [{**T["inputs"][0], **changes}]}


def image(**changes) -> dict:
    return {"inputs": [{**ONE, **changes}]}


def raw(data: str) -> bytes:
    return ('{"inputs": [{"name": "readings", "shape": [1, 1], "datatype": "FP64", "data": [%s]}]}' % data).encode()


PIXEL_255 = np.zeros((1, 1, 28, 28))
PIXEL_255[0, 0, 3, 4] = 255
BAD = {  # case: (model, body, fragments of the error)
    "not JSON": (LINEAR, b'{"inputs": [', ("Invalid JSON",)),
    "JSON array": (LINEAR, b"[]", ("Input should be an object",)),
    "empty body": (LINEAR, b"", ("Invalid JSON",)),
    "no inputs": (LINEAR, {}, ("inputs: Field required",)),
    "empty inputs": (LINEAR, {"inputs": []}, ("inputs: List should have at least 1 item",)),
    "two inputs": (LINEAR, {"inputs": T["inputs"] * 2}, ("takes exactly one input, 'readings'", "got 2")),
    "unknown field": (LINEAR, {**T, "model": "x"}, ("model: Extra inputs are not permitted",)),
    "unknown tensor field": (LINEAR, tensor(unit="C"), ("inputs[0].unit: Extra inputs are not permitted",)),
    "input name": (LINEAR, tensor(name="images"), ("inputs[0].name", "input is 'readings', got 'images'")),
    "datatype FP32 for FP64": (LINEAR, tensor(datatype="FP32"), ("inputs[0].datatype", "is FP64, got 'FP32'")),
    "datatype FP64 for FP32": (MNIST, image(datatype="FP64"), ("'images' is FP32, got 'FP64'",)),
    "datatype INT8": (MNIST, image(datatype="INT8"), ("is FP32, got 'INT8'",)),
    "datatype not a string": (MNIST, image(datatype=32), ("inputs[0].datatype: Input should be a valid string",)),
    "rank": (LINEAR, tensor(shape=[2]), ("inputs[0].shape: expected [-1, 1]", "got [2]")),
    "fixed dimension": (MNIST, image(shape=[1, 1, 28, 27]), ("expected [-1, 1, 28, 28]",)),
    "batch 0": (LINEAR, tensor(shape=[0, 1], data=[]), ("must be 1 to 10,000, got 0",)),
    "batch -1": (LINEAR, tensor(shape=[-1, 1]), ("must be 1 to 10,000, got -1",)),
    "too many readings": (LINEAR, tensor(shape=[10_001, 1]), ("must be 1 to 10,000, got 10001",)),
    "too many images": (MNIST, image(shape=[1025, 1, 28, 28]), ("must be 1 to 1,024, got 1025",)),
    "shape of floats": (LINEAR, tensor(shape=[2.0, 1]), ("inputs[0].shape[0]: Input should be a valid integer",)),
    "shape not a list": (LINEAR, tensor(shape="2,1"), ("inputs[0].shape: Input should be a valid array",)),
    "too few values": (LINEAR, tensor(shape=[3, 1]), ("data: 2 values, but shape [3, 1] needs 3",)),
    "too many values": (MNIST, image(data=[0.0] * 785), ("785 values, but shape [1, 1, 28, 28] needs 784",)),
    "no data": (LINEAR, {"inputs": [{"name": "readings", "shape": [1, 1], "datatype": "FP64"}]}, ("data is missing",)),
    "data null": (LINEAR, tensor(data=None), ("inputs[0].data: Input should be a valid array",)),
    "string value": (LINEAR, tensor(data=["35.7", 55.9]), ("data[0]: expected a finite number, got a string",)),
    "boolean value": (LINEAR, tensor(data=[35.7, True]), ("data[1]: expected a finite number, got true",)),
    "null value": (LINEAR, tensor(data=[None, 1.0]), ("data[0]: expected a finite number, got null",)),
    "object value": (LINEAR, tensor(data=[{}, 1.0]), ("data[0]: expected a finite number, got an object",)),
    "list in flat data": (LINEAR, tensor(data=[1.0, [2.0]]), ("data[1]: expected a finite number, got a list",)),
    "NaN": (LINEAR, raw("NaN"), ("data[0]: expected a finite number, got NaN",)),
    "Infinity": (LINEAR, raw("Infinity"), ("got Infinity",)),
    "-Infinity": (LINEAR, raw("-Infinity"), ("got -Infinity",)),
    "1e999": (LINEAR, raw("1e999"), ("got Infinity",)),
    "huge integer": (LINEAR, raw("1" + "0" * 400), ("got a number beyond the float range",)),
    "ragged nesting": (LINEAR, tensor(data=[[1.0], [2.0, 3.0]]),
                       ("data[1]: nested data must follow shape [2, 1]: expected a list of 1 items here, got 2 items",)),
    "nesting transposed": (LINEAR, tensor(data=[[1.0, 2.0]]), ("data: nested data must follow shape [2, 1]",)),
    "nested then flat": (LINEAR, tensor(data=[[1.0], 2.0]), ("data[1]: nested data", "got the number 2")),
    "nested too deep": (LINEAR, tensor(data=[[[1.0]], [[2.0]]]), ("data[0][0]: expected a finite number, got a list",)),
    "pixel 255": (MNIST, image(data=PIXEL_255.tolist()),
                  ("data[0][0][3][4]: 255 is outside the model's input range [0, 1]", "divide 0-255 pixel values by 255")),
    "negative pixel": (MNIST, image(data=[0.0] * 5 + [-0.1] + [0.0] * 778), ("data[5]: -0.1 is outside",)),
    "id not a string": (LINEAR, {**T, "id": 7}, ("id: Input should be a valid string",)),
    "id null": (LINEAR, {**T, "id": None}, ("id: Input should be a valid string",)),
    "parameter list": (LINEAR, {**T, "parameters": {"x": [1]}}, ("parameters.x: a parameter must be a string",)),
    "parameters not an object": (LINEAR, {**T, "parameters": [1]}, ("parameters: Input should be an object",)),
    "binary_data_output not a boolean": (LINEAR, {**T, "parameters": {"binary_data_output": 1}},
                                         ("request.parameters.binary_data_output: expected true or false, got 1",)),
    "binary_data not a boolean": (LINEAR, {**T, "outputs": [{"name": "celsius", "parameters": {"binary_data": "yes"}}]},
                                  ("outputs[0].parameters.binary_data: expected true or false",)),
    "classification": (MNIST, {**image(), "outputs": [{"name": "probabilities", "parameters": {"classification": 3}}]},
                       ("classification extension is not supported",)),
    "shared memory": (LINEAR, tensor(parameters={"shared_memory_region": "r"}), ("shared-memory extensions",)),
    "empty outputs": (LINEAR, {**T, "outputs": []}, ("outputs: List should have at least 1 item",)),
    "unknown output": (MNIST, {**image(), "outputs": [{"name": "celsius"}]},
                       ("outputs[0].name: mnist-fc has no output 'celsius'; its outputs: probabilities",)),
    "output twice": (LINEAR, {**T, "outputs": [{"name": "celsius"}] * 2}, ("'celsius' is asked for twice",)),
    "output field": (LINEAR, {**T, "outputs": [{"name": "celsius", "x": 1}]}, ("outputs[0].x: Extra inputs",)),
    "binary_data_size without binary part": (LINEAR, {"inputs": [{**HEAD["inputs"][0]}]},
                                             ("no binary part", HEADER)),
    "binary_data_size negative": (LINEAR, tensor(parameters={"binary_data_size": -1}), ("an integer >= 0",)),
    "deep nesting": (LINEAR, b'{"inputs": [{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}", ("Invalid JSON",)),
    "long name": (LINEAR, tensor(name="x" * 100_000), ("got 'xxxxxx",)),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_400_with_a_clear_message(http, case):
    model, body, fragments = BAD[case]
    r = infer(http, model, body)
    assert_error(r, 400, *fragments)
    assert len(r.text) < 1000


PIXELS = np.zeros(784, "<f4")
PIXELS[10] = 255


def binary_case(head: dict, tail: bytes, header: str | None = None) -> tuple[bytes, str]:
    """(body, Inference-Header-Content-Length): the JSON part's true length unless `header` says otherwise."""
    text = json.dumps(head).encode()
    return text + tail, str(len(text)) if header is None else header


def sized(size: int, **changes) -> dict:
    return {"inputs": [{**HEAD["inputs"][0], "parameters": {"binary_data_size": size}, **changes}]}


BAD_BINARY = {  # case: (model, body, header value, fragments of the error)
    "header not a number": (LINEAR, *binary_case(HEAD, BINARY, "16 bytes"), (f"{HEADER} must be the JSON part's length",)),
    "header negative": (LINEAR, *binary_case(HEAD, BINARY, "-1"), (f"{HEADER} must be",)),
    "header beyond the body": (LINEAR, *binary_case(HEAD, BINARY, str(HEAD_LENGTH + 17)), ("but the body has only",)),
    "header cuts the JSON": (LINEAR, *binary_case(HEAD, BINARY, str(HEAD_LENGTH - 1)), ("Invalid JSON",)),
    "size not shape x datatype": (LINEAR, *binary_case(sized(8), BINARY[:8]),
                                  ("binary_data_size is 8, but shape [2, 1] of FP64 is 16 bytes",)),
    "bytes missing": (LINEAR, *binary_case(HEAD, BINARY[:15]), ("has 15 bytes, expected exactly 16",)),
    "trailing bytes": (LINEAR, *binary_case(HEAD, BINARY + b"\0"), ("has 17 bytes, expected exactly 16",)),
    "bytes but no binary input": (LINEAR, *binary_case(T, BINARY), ("16 bytes follow the JSON part",)),
    "data and binary_data_size": (LINEAR, *binary_case(sized(16, data=[1.0, 2.0]), BINARY),
                                  ("has both data and parameters.binary_data_size",)),
    "NaN in the bytes": (LINEAR, *binary_case(HEAD, np.array([1.0, np.nan]).tobytes()),
                         ("inputs[0][1]: expected a finite number, got NaN",)),
    "pixel 255 in the bytes": (MNIST, *binary_case({"inputs": [{**NO_DATA, "parameters": {"binary_data_size": 3136}}]},
                                                   PIXELS.tobytes()), ("inputs[0][10]: 255 is outside the model's input range",)),
}


@pytest.mark.parametrize("case", BAD_BINARY)
def test_bad_binary_request_is_400(http, case):
    model, body, header, fragments = BAD_BINARY[case]
    r = http.post(f"/v2/models/{model}/infer", content=body,
                  headers={HEADER: header, "content-type": "application/octet-stream"})
    assert_error(r, 400, *fragments)


def test_content_types(http):
    body = json.dumps(T).encode()
    for media_type in ("text/plain", "multipart/form-data; boundary=x", "application/xml"):
        assert_error(http.post(f"/v2/models/{LINEAR}/infer", content=body, headers={"content-type": media_type}),
                     415, "is not accepted here; send application/json, or application/octet-stream")
    assert_error(http.post(f"/v2/models/{LINEAR}/infer", content=body,
                           headers={"content-type": "application/json", "content-encoding": "gzip"}), 415, "compressed")
    assert_error(http.post(f"/v2/models/{LINEAR}/infer", content=body, headers={"content-type": "application/octet-stream"}),
                 400, f"needs the {HEADER} header")
    for headers in ({}, {"content-type": "application/json; charset=utf-8"}, {HEADER: str(len(body))},
                    {HEADER: str(len(body)), "content-type": "application/octet-stream"}):
        assert http.post(f"/v2/models/{LINEAR}/infer", content=body, headers=headers).status_code == 200, headers


def test_body_over_the_limit_is_413(http):
    body = b'{"inputs": [{"data": [' + b"0," * (8 * 1024 * 1024 + 1) + b"0]}]}"
    assert_error(http.post(f"/v2/models/{MNIST}/infer", content=body, headers={"content-type": "application/json"}),
                 413, "exceeds the limit")


def test_server_survives_and_logs_no_5xx(http, server):
    assert http.get("/v2/health/ready").status_code == 200
    _, log = server
    log.seek(0)
    assert "status=5" not in log.read()


# --------------------------------------------------------------------------------------------- /docs.json


def test_docs_document_every_v2_route_and_status(docs):
    import schemathesis

    schemathesis.openapi.from_dict(docs).validate()
    paths = {path: item for path, item in docs["paths"].items() if path.startswith("/v2")}
    documented = {(method.upper(), path) for path, item in paths.items() for method in item}
    assert documented == {(method, route.path) for route in v2.ROUTES for method in route.methods if method != "HEAD"}
    for path, item in paths.items():
        for method, op in item.items():
            codes = set(op["responses"])
            expected = {"200"} | ({"400", "404", "408", "413", "415", "429", "503", "504"} if method == "post"
                                  else {"404", "503"} if "{name}" in path else {"503"} if path == "/v2/health/ready"
                                  else set())
            assert codes == expected, (path, codes)
            for code in codes - {"200"}:
                assert op["responses"][code]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
            for param in op["parameters"]:
                assert param["schema"].get("enum") == ([*artifacts.MODEL_NAMES] if param["name"] == "name" else None)
    tensor = docs["components"]["schemas"]["V2RequestInput"]["properties"]
    assert tensor["name"]["enum"] == ["images", "readings"] and tensor["datatype"]["enum"] == ["FP32", "FP64"]
    text = json.dumps({k: v for k, v in docs["components"]["schemas"].items() if k.startswith("V2")})
    assert '"const"' not in text and '"examples"' not in text and '"null"' not in text


# --------------------------------------------------------------------------------------------- in process


def test_not_ready_is_503_except_live(monkeypatch):
    monkeypatch.setattr(bentoml, "get_current_service", lambda: None)  # no service instance yet
    with TestClient(Starlette(routes=v2.ROUTES)) as client:
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2").status_code == 200
        for r in (client.get("/v2/health/ready"), client.get(f"/v2/models/{MNIST}"), client.get(f"/v2/models/{MNIST}/ready"),
                  client.post(f"/v2/models/{LINEAR}/infer", json=T)):
            assert r.status_code == 503 and r.json() == {"error": "the models are not loaded yet; retry in a moment"}


def test_split_body():
    assert v2.split_body(b"{}", None) == (b"{}", None)
    assert v2.split_body(b"{}abc", "2") == (b"{}", b"abc")
    assert v2.split_body(b"{}", "2") == (b"{}", b"")
    for header in ("", "x", "1.5", "-2", "1" * 13, "\u0663"):  # "\u0663": an Arabic-Indic three
        with pytest.raises(ServingError, match="must be the JSON part's length"):
            v2.split_body(b"{}", header)


def test_leaves_and_positions():
    assert v2.leaves([1, 2, 3, 4], [2, 2], "d") == [1, 2, 3, 4]
    assert v2.leaves([[1, 2], [3, 4]], [2, 2], "d") == [1, 2, 3, 4]
    assert v2.leaves([[[1], [2]], [[3], [4]]], [2, 2, 1], "d") == [1, 2, 3, 4]
    with pytest.raises(ServingError, match=r"d\[1\]\[0\]: nested data must follow shape \[2, 2, 1\]"):
        v2.leaves([[[1], [2]], [[3, 4], [4]]], [2, 2, 1], "d")


def json_input(data, shape) -> v2.JsonInput:
    return v2.JsonInput(v2_schemas.V2RequestInput(name="d", shape=shape, datatype="FP64", data=data), "d")


def test_numbers():
    np.testing.assert_array_equal(json_input([1, 2.5, -3], [3]).as_numpy(), [1, 2.5, -3])
    nested = json_input([[0.0, 1.0], [2.0, 3.0]], [2, 2])
    nested.as_numpy()
    assert nested.position(3) == "[1][1]" and json_input([1], [1]).position(5) == "[5]"
    for value, text in ((True, "true"), (None, "null"), ("1", "a string"), (float("nan"), "NaN"),
                        (float("-inf"), "-Infinity"), (10**400, "a number beyond the float range"), ([1], "a list")):
        with pytest.raises(ServingError, match=rf"d.data\[0\]\[1\]: expected a finite number, got {text}"):
            json_input([[0.0, value]], [1, 2]).as_numpy()


def test_check_declared_shape():
    spec = {"shape": [-1, 1, 28, 28]}
    data_plane.check_declared_shape([3, 1, 28, 28], spec, 1024, "x")
    for shape in ([3, 1, 28], [3, 2, 28, 28], [0, 1, 28, 28], [1025, 1, 28, 28], [3, 1, 28, 28, 1]):
        with pytest.raises(ServingError):
            data_plane.check_declared_shape(shape, spec, 1024, "x")


def test_pydantic_fails_fast_on_repeated_bad_items():
    """A 16 MiB body of bad items is refused after the first, not after collecting millions of errors."""
    from pydantic import ValidationError

    for body in ('{"inputs": [' + ",".join(["{}"] * 100_000) + "]}",
                 '{"inputs": [], "parameters": {' + ",".join(f'"p{i}": []' for i in range(100_000)) + "}}",
                 '{"inputs": [{"name": "x", "datatype": "x", "shape": [' + ",".join(['"a"'] * 100_000) + "]}]}"):
        with pytest.raises(ValidationError) as e:
            v2_schemas.V2InferRequest.model_validate_json(body)
        assert e.value.error_count() <= 3
