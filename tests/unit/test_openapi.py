"""The /docs.json route (service/api/routes.py: BentoML's generated document, corrected by service/api/openapi.py), with a canary that fails once BentoML stops misdescribing what the corrections correct."""

import json

import jsonschema_rs
import pytest

from service.api import openapi
from service.api.errors import ERROR_SCHEMA


def upstream_doc() -> dict:
    """The document BentoML generates for the service (what `bentoml build` writes as apis/openapi.yaml)."""
    from service.service import ThermoDigits

    return ThermoDigits.openapi_spec.asdict()


def test_upstream_still_misdescribes_what_openapi_py_corrects():
    """If this fails, BentoML changed its generated document: review (and shrink) service/api/openapi.py."""
    import schemathesis

    doc = upstream_doc()
    assert doc["openapi"] == "3.0.2"
    schemas = doc["components"]["schemas"]
    assert schemas["InvalidArgument"]["properties"]["detail"]["type"] == "string"  # we answer a list
    assert schemas["digit_image__Input"]["properties"]["image"]["type"] == "file"  # not OpenAPI 3.0
    max_value = doc["paths"]["/digit"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]["max_value"]
    assert max_value["exclusiveMinimum"] == 0 and "minimum" not in max_value  # JSON Schema 2020-12 in a 3.0 doc
    pixels = doc["paths"]["/digit"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]["pixels"]
    assert "maximum" not in pixels["items"]["items"]  # pixel <= max_value <= 65535: a rule across two fields
    post = doc["paths"]["/temperature"]["post"]
    assert set(post["responses"]) == {200, 400, 404, 500} and "required" not in post["requestBody"]
    assert "/metadata" not in doc["paths"]
    with pytest.raises(jsonschema_rs.ValidationError):
        schemathesis.openapi.from_dict(doc).validate()


def test_served_document_is_valid_openapi_and_documents_every_error(client):
    import schemathesis

    doc = client.get("/docs.json").json()
    assert doc == json.loads(json.dumps(openapi.fix(upstream_doc())))
    schemathesis.openapi.from_dict(doc).validate()
    assert "/metadata" in doc["paths"]
    for route in ("/temperature", "/digit", "/digits", "/digit/image"):
        post = doc["paths"][route]["post"]
        assert post["requestBody"]["required"] is True
        assert {"400", "408", "413", "415", "429", "504"} <= set(post["responses"])
        for code, response in post["responses"].items():
            if code != "200":
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    upload = doc["paths"]["/digit/image"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert upload["schema"]["properties"]["image"] == {**upload["schema"]["properties"]["image"], "type": "string", "format": "binary"}
    assert "image/png" in upload["encoding"]["image"]["contentType"]


def test_error_bodies_match_the_documented_error_schema(client):
    from service.service import SETTINGS

    MAX_BODY_BYTES = SETTINGS.max_body_bytes

    validator = jsonschema_rs.validator_for(ERROR_SCHEMA)
    answers = [
        client.post("/temperature", json={"readings": ["x"] * 30}),  # 400 with detail
        client.post("/digit/image", files={"image": ("x.png", b"nope", "image/png")}),  # 400 without detail
        client.post("/temperature", content=b"{}", headers={"content-type": "text/plain"}),  # 415
        client.post("/temperature", content=b"1" * (MAX_BODY_BYTES + 1), headers={"content-type": "application/json"}),
        client.get("/no-such-route"),  # 404
        client.put("/temperature", json={}),  # 405
    ]
    assert [r.status_code for r in answers] == [400, 400, 415, 413, 404, 405]
    for r in answers:
        validator.validate(r.json())


def test_openapi30_conversion():
    converted = openapi.to_openapi30({
        "type": "object",
        "properties": {
            "a": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "b": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "c": {"const": "x", "examples": ["x", "y"]},
            "d": {"type": "array", "items": {"type": "file"}},
        },
    })
    props = converted["properties"]
    assert props["a"] == {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1, "exclusiveMaximum": True}
    assert props["b"] == {"type": "string", "nullable": True}
    assert props["c"] == {"enum": ["x"], "example": "x"}
    assert props["d"]["items"] == {"type": "string", "format": "binary"}
