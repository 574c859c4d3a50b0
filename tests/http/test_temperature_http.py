"""POST /temperature through BentoML's ASGI app: answers, and a clear 4xx for every bad input."""

import json

import numpy as np
import pytest

import artifacts
from expected import T_U, celsius


def post(client, body, content_type="application/json"):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post("/temperature", content=data, headers={"content-type": content_type})


def test_linear_matches_the_least_squares_line(client):
    r = post(client, {"readings": T_U})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "temperature-linear" and len(body["version"]) == 16
    np.testing.assert_allclose(body["celsius"], celsius(T_U), atol=1e-3)


def test_mlp_is_selectable_and_fits_the_data(client):
    r = post(client, {"readings": [35.7, 55.9], "model": "mlp"})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "temperature-mlp"
    assert r.json()["celsius"] == pytest.approx([0.5, 14.0], abs=2.5)


def test_extreme_but_finite_readings_are_answered(client):
    r = post(client, {"readings": [-1e4, 0, 1e4]})
    assert r.status_code == 200
    assert r.json()["celsius"][2] == pytest.approx(celsius(1e4), rel=1e-6)


def test_max_readings_is_accepted(client):
    r = post(client, {"readings": [50.0] * 10_000})
    assert r.status_code == 200 and len(r.json()["celsius"]) == 10_000


BAD = {
    "empty list": ({"readings": []}, "at least 1 item"),
    "too many readings": ({"readings": [1.0] * 10_001}, "at most 10000"),
    "NaN literal": ('{"readings": [NaN]}', "finite number"),
    "Infinity literal": ('{"readings": [Infinity]}', "finite number"),
    "-Infinity literal": ('{"readings": [1, -Infinity]}', "readings[1]: Input should be a finite number"),
    "overflowing number": ('{"readings": [1e999]}', "finite number"),
    "string reading": ({"readings": ["35.7"]}, "valid number"),
    "null reading": ({"readings": [None]}, "valid number"),
    "null readings": ({"readings": None}, "valid array"),
    "boolean reading": ({"readings": [True]}, "valid number"),
    "unknown model": ({"readings": [1.0], "model": "cubic"}, "'linear' or 'mlp'"),
    "missing field": ({"model": "linear"}, "readings: Field required"),
    "misspelt field": ({"reading": [1.0]}, "Field required"),
    "not JSON": ("readings=1,2", "Invalid JSON"),
    "JSON array": ([35.7, 55.9], "Input should be an object"),
    "JSON string": ('"hello"', "Input should be an object"),
    "empty body": ("", "readings: Field required"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_is_a_400_with_a_message(client, case):
    body, message = BAD[case]
    r = post(client, body)
    assert r.status_code == 400, r.text
    error = r.json()
    assert set(error) <= {"error", "detail"} and isinstance(error["error"], str)
    assert message in error["error"]
    # ... and the server is unharmed
    assert post(client, {"readings": [35.7]}).status_code == 200


def test_wrong_content_type_is_415(client):
    r = post(client, {"readings": [1.0]}, content_type="text/plain")
    assert r.status_code == 415
    assert "application/json" in r.json()["error"]


def test_body_over_the_limit_is_413(client):
    from service.service import SETTINGS

    MAX_BODY_BYTES = SETTINGS.max_body_bytes

    r = post(client, b'{"readings": [' + b"1," * (MAX_BODY_BYTES // 2) + b"1]}")
    assert r.status_code == 413
    assert str(MAX_BODY_BYTES) in r.json()["error"]


def test_unknown_route_gets_the_same_error_shape(client):
    r = client.get("/no-such-route")
    assert r.status_code == 404 and r.json() == {"error": "Not Found"}


def test_metadata_lists_the_loaded_models(client):
    r = client.get("/metadata")
    assert r.status_code == 200
    models = r.json()["models"]
    assert set(models) == set(artifacts.MODEL_NAMES) == {"temperature-linear", "temperature-mlp", "mnist-fc", "mnist-fc-distilled"}
    for m in models.values():
        assert m["backend"] == "onnx" and m["device"] == "cpu"
        assert set(m["files"]) == {"model.onnx", "model.pt"}
