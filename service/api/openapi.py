"""Corrections to the OpenAPI document BentoML 1.4 generates for this service (GET /docs.json), as a pure function on the document.

What the generated document gets wrong for this service, each fixed by ``fix``:

* It declares OpenAPI 3.0.2 but pastes pydantic's JSON Schema 2020-12 output: a numeric
  ``exclusiveMinimum`` (3.0 wants ``minimum`` plus ``exclusiveMinimum: true``), ``anyOf`` with
  ``{"type": "null"}`` (3.0: ``nullable``), ``examples`` lists (3.0: ``example``), ``const``, and
  ``type: file`` for the upload.  Validators (schemathesis among them) refuse the document.
* Error bodies: it documents ``detail`` as a string and only 400/404/500; this service answers
  every error in one shape (service/api/errors.py), and also 408 (body too slow), 413 (body too
  large), 415 (wrong content type), 429 (overloaded) and 504 (over ``traffic.timeout``). The request
  body is required.
* The multipart ``image`` field: a binary file whose part should be an image type.
* Pixel arrays: the value bound implied by ``pixel <= max_value <= 65535`` (a rule across two fields)
  is added to the pixel schema.
* ``/readyz`` answers 503 until the models are loaded; the mounted ``GET /metadata`` and the v2 paths
  are missing.

service/upstream/openapi.py makes BentoML serve ``fix(...)`` of its document; tests fail once upstream
changes what these corrections rely on.
"""

from __future__ import annotations

import copy
from typing import Any

from service.api.errors import ERROR_SCHEMA
from service.api.schemas import MAX_IMAGES, SIDE, DigitRequest

JSON = "application/json"
IMAGE_TYPES = ("image/png", "image/jpeg", "image/bmp", "image/gif", "image/webp")
# pixels must be <= max_value, and max_value <= this (65535)
MAX_PIXEL = DigitRequest.model_json_schema()["properties"]["max_value"]["maximum"]

# Status codes an inference endpoint can answer besides 200, and why.
API_ERRORS = {
    "400": "Invalid input: the body does not match the request schema, or the image cannot be used.",
    "404": "Not Found",
    "408": "The request body did not arrive in time (SERVICE_BODY_TIMEOUT_S).",
    "413": "The request body is larger than SERVICE_MAX_BODY_BYTES (16 MiB by default).",
    "415": "The Content-Type is not the one this endpoint takes.",
    "429": "Overloaded: this worker's queue has not emptied for SERVICE_QUEUE_TARGET_S, or it holds too many "
           "requests or body bytes. Retry after the Retry-After header's seconds.",
    "500": "Internal Server Error (a bug: please report it).",
    "504": "The request was not answered within traffic.timeout.",
}

METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Metadata",
    "required": ["models"],
    "properties": {
        "models": {
            "type": "object",
            "description": "One entry per loaded model, by name: its metadata.json plus backend, device and providers.",
            "additionalProperties": {
                "type": "object",
                "required": ["name", "version", "backend", "device", "providers"],
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "string"},
                    "backend": {"type": "string", "enum": ["onnx", "torchscript"]},
                    "device": {"type": "string", "enum": ["cpu", "cuda"]},
                    "providers": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}}


# ---------------------------------------------------------------------------------------------
# JSON Schema 2020-12 (pydantic) -> OpenAPI 3.0 schema objects

_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONE = ("items", "additionalProperties", "not")


def to_openapi30(schema: Any) -> Any:
    """Return a copy of a JSON Schema 2020-12 schema rewritten in OpenAPI 3.0's schema dialect."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in _SCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: to_openapi30(sub) for name, sub in out[key].items()}
    for key in _SCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [to_openapi30(sub) for sub in out[key]]
    for key in _SCHEMA_ONE:
        if isinstance(out.get(key), dict):
            out[key] = to_openapi30(out[key])
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = out.get(bound)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[flag], out[bound] = value, True
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if isinstance(out.get("examples"), list):
        examples = out.pop("examples")
        if examples and "example" not in out:
            out["example"] = examples[0]
    if out.get("type") == "file":
        out["type"], out["format"] = "string", "binary"
    for key in ("anyOf", "oneOf"):
        subs = out.get(key)
        if isinstance(subs, list) and any(s == {"type": "null"} for s in subs):
            rest = [s for s in subs if s != {"type": "null"}]
            del out[key]
            out["nullable"] = True
            if len(rest) == 1:
                out.update({k: v for k, v in rest[0].items() if k not in out})
            else:
                out[key] = rest
    return out


def _operations(doc: dict[str, Any]):
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if method in ("get", "put", "post", "delete", "patch", "head", "options") and isinstance(op, dict):
                yield path, method, op


def _convert_all_schemas(doc: dict[str, Any]) -> None:
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in list(schemas):
        schemas[name] = to_openapi30(schemas[name])
    for _, _, op in _operations(doc):
        if "responses" in op:  # upstream keys are ints (400) and would sit beside our "400" in the JSON
            op["responses"] = {str(code): response for code, response in op["responses"].items()}
        bodies = [op.get("requestBody", {})] + list(op.get("responses", {}).values())
        for body in bodies:
            for media in (body or {}).get("content", {}).values():
                if "schema" in media:
                    media["schema"] = to_openapi30(media["schema"])
        for param in op.get("parameters", []):
            if "schema" in param:
                param["schema"] = to_openapi30(param["schema"])


# ---------------------------------------------------------------------------------------------
# This service's corrections


class SpecMismatch(RuntimeError):
    """The generated document no longer has the shape these corrections expect (BentoML or the API changed)."""


def _request_schema(doc: dict[str, Any], route: str, media_type: str = JSON) -> dict[str, Any]:
    try:
        return doc["paths"][route]["post"]["requestBody"]["content"][media_type]["schema"]
    except KeyError as e:
        raise SpecMismatch(f"no {media_type} request schema for POST {route}") from e


def _pixel_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """items: {items: {number}} (one image) -> exactly SIDE x SIDE numbers in [0, MAX_PIXEL] (the sizes are there
    already: they are restated so that a change of the request type cannot drop them unnoticed)."""
    row = schema.get("items")
    if not (schema.get("type") == "array" and isinstance(row, dict) and row.get("type") == "array"
            and isinstance(row.get("items"), dict) and row["items"].get("type") == "number"):
        raise SpecMismatch(f"unexpected image schema {schema!r}")
    pixel = {**row["items"], "maximum": MAX_PIXEL}
    return {**schema, "minItems": SIDE, "maxItems": SIDE,
            "items": {**row, "minItems": SIDE, "maxItems": SIDE, "items": pixel}}


MAX_NOTE = " Every pixel must be <= max_value (400 otherwise)."


def _fix_pixels(doc: dict[str, Any]) -> None:
    one = _request_schema(doc, "/digit")["properties"]
    one["pixels"] = _pixel_schema(one["pixels"])
    one["pixels"]["description"] = one["pixels"].get("description", "") + MAX_NOTE
    many = _request_schema(doc, "/digits")["properties"]
    images = many["images"]
    if images.get("maxItems") != MAX_IMAGES:
        raise SpecMismatch(f"/digits images: expected maxItems {MAX_IMAGES}, got {images.get('maxItems')}")
    many["images"] = {**images, "items": _pixel_schema(images["items"])}
    many["images"]["description"] = images.get("description", "") + MAX_NOTE


def _fix_upload(doc: dict[str, Any]) -> None:
    media = doc["paths"]["/digit/image"]["post"]["requestBody"]["content"].get("multipart/form-data")
    if media is None or "image" not in media.get("schema", {}).get("properties", {}):
        raise SpecMismatch("POST /digit/image: no multipart 'image' field")
    media["schema"]["properties"]["image"] = {
        "type": "string", "format": "binary", "title": "Image",
        "description": "The image file (PNG, JPEG, BMP, GIF or WebP; at most 5 MiB and 4096x4096 pixels).",
    }
    media["encoding"] = {"image": {"contentType": ", ".join(IMAGE_TYPES)}}


def _fix_errors(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    schemas["Error"] = copy.deepcopy(ERROR_SCHEMA)
    for name in ("InvalidArgument", "NotFound", "InternalServerError"):
        schemas.pop(name, None)  # upstream's: "detail" as a string
    for path, method, op in _operations(doc):
        responses = op.setdefault("responses", {})
        if "Service APIs" in op.get("tags", ()):
            if "requestBody" in op:
                op["requestBody"]["required"] = True  # no body: 415 (no content type) or 400
            for code, description in API_ERRORS.items():
                responses[code] = _error_response(description)
        elif path == "/readyz":
            responses["503"] = _error_response("The models are not loaded yet.")


def _add_metadata(doc: dict[str, Any]) -> None:
    doc["components"]["schemas"]["Metadata"] = copy.deepcopy(METADATA_SCHEMA)
    doc["paths"].setdefault("/metadata", {})["get"] = {
        "tags": ["Infrastructure"],
        "description": "What is loaded, from which files, on which backend and device.",
        "operationId": "metadata",
        "responses": {"200": {"description": "Successful Response",
                              "content": {JSON: {"schema": {"$ref": "#/components/schemas/Metadata"}}}}},
    }


def fix(doc: dict[str, Any]) -> dict[str, Any]:
    """Return the corrected copy of BentoML's generated document (a dict, as served at /docs.json)."""
    doc = copy.deepcopy(doc)
    if not str(doc.get("openapi", "")).startswith("3.0"):
        raise SpecMismatch(f"expected an OpenAPI 3.0 document, got {doc.get('openapi')!r}")
    _convert_all_schemas(doc)
    _fix_pixels(doc)
    _fix_upload(doc)
    _fix_errors(doc)
    _add_metadata(doc)
    from service.v2 import schemas as v2_schemas  # the Open Inference Protocol's /v2 paths

    v2_schemas.add_to_openapi(doc)
    return doc
