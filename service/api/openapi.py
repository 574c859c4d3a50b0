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

The service serves ``fix(...)`` of BentoML's document at /docs.json (a route of its own, service/api/routes.py);
tests fail once upstream changes what these corrections rely on.
"""

from __future__ import annotations

import copy
from typing import Any

import artifacts
from service.api.errors import ERROR_SCHEMA
from service.api.schemas import MAX_IMAGES, SIDE, DigitRequest
from service.core.protocol import DATATYPES
from service.v2 import schemas as v2

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
    add_v2(doc)
    return doc


# --------------------------------------------------------------------------------------------- the v2 protocol

TAG = "Open Inference Protocol (v2)"
ERRORS = {
    "400": "Invalid input: the body, tensor name, datatype, shape or data is not what the model takes.",
    "404": "No model of that name, or no such version loaded.",
    "415": "The Content-Type (or Content-Encoding) is not one this endpoint takes.",
    "503": "The models are not loaded yet, or (readiness) the server is draining after SIGTERM.",
}  # and 408, 413, 429, 504 as every POST (API_ERRORS)
INFER_DOC = (
    "Run the model on one input tensor. The body may repeat the model's name and version as `model_name` and "
    "`model_version` (KServe's SDK sends `model_name`): they must be the path's (400 otherwise; a `model_version` "
    "where the path names none chooses that version, like a path). Without a version, the model's default version answers (or its canary, for the canary's share; a client sending `X-Routing-Key` stays on one side). Binary tensor data extension: with the "
    "header `Inference-Header-Content-Length: n` (and Content-Type application/octet-stream, or none) the body is n "
    "bytes of this JSON followed by each input's raw little-endian bytes, sized by its "
    "`parameters.binary_data_size`. Outputs asked for as binary data (`binary_data_output`, `binary_data`) come "
    "back the same way, as application/octet-stream.")


def _drop_null_defaults(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _drop_null_defaults(v) for k, v in schema.items() if not (k == "default" and v is None)}
    if isinstance(schema, list):
        return [_drop_null_defaults(v) for v in schema]
    return schema


def component_schemas(models: list[dict]) -> dict[str, Any]:
    """The bodies' schemas (OpenAPI 3.0), with the served models' tensor names, datatypes and ranks."""
    found: dict[str, Any] = {}
    for cls in v2.COMPONENTS:
        schema = cls.model_json_schema(ref_template="#/components/schemas/{model}")
        found.update(schema.pop("$defs", {}))
        found[cls.__name__] = schema
    schemas = {name: _drop_null_defaults(to_openapi30(schema)) for name, schema in found.items()}
    inputs = [m["inputs"][0] for m in models]
    tensor = schemas["V2RequestInput"]["properties"]
    tensor["name"]["enum"] = sorted({t["name"] for t in inputs})
    tensor["datatype"]["enum"] = sorted({DATATYPES[t["dtype"]] for t in inputs})
    ranks = [len(t["shape"]) for t in inputs]
    tensor["shape"].update(minItems=min(ranks), maxItems=max(ranks), items={"type": "integer", "minimum": 1})
    tensor["data"]["items"] = {"anyOf": [{"type": "number"}, {"type": "array", "items": {}}]}
    request = schemas["V2InferRequest"]["properties"]
    request["inputs"]["maxItems"] = 1
    request["outputs"]["maxItems"] = max(len(m["outputs"]) for m in models)
    schemas["V2RequestOutput"]["properties"]["name"]["enum"] = sorted({o["name"] for m in models for o in m["outputs"]})
    return schemas


def _content(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}


def _operation(operation_id: str, description: str, ok: dict[str, Any], errors: tuple[str, ...],
               parameters: list[dict], **extra: Any) -> dict[str, Any]:
    responses = {"200": {"description": "Successful Response", **ok}}
    responses.update({code: {"description": ERRORS.get(code) or API_ERRORS[code], "content": _content("Error")}
                      for code in errors})
    return {"tags": [TAG], "operationId": operation_id, "description": description,
            "parameters": parameters, "responses": responses, **extra}


def registry_models() -> list[dict]:
    """Each registry model's name and tensors, as a metadata.json states them (every version of a model has its
    task's tensors)."""
    return [{"name": m.name, "inputs": [m.task.input.as_dict()], "outputs": [m.task.output.as_dict()]}
            for m in artifacts.MODELS]


def add_v2(doc: dict[str, Any], models: list[dict] | None = None) -> None:
    """Add the /v2 paths and their schemas to an OpenAPI 3.0 document; `models`: name and tensors of each model
    (default: the registry's)."""
    models = registry_models() if models is None else models
    doc.setdefault("components", {}).setdefault("schemas", {}).update(component_schemas(models))
    name = {"name": "name", "in": "path", "required": True, "description": "The model's name.",
            "schema": {"type": "string", "enum": [m["name"] for m in models]}}
    version = {"name": "version", "in": "path", "required": True,
               "description": "One of the model's loaded versions (GET /v2/models/{name} lists them).",
               "schema": {"type": "string"}}
    infer_ok = {"content": {**_content("V2InferResponse"), "application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"}}},
                "headers": {"Inference-Header-Content-Length": {
                    "description": "Binary responses only: the length of the JSON part.",
                    "schema": {"type": "integer", "minimum": 0}}}}
    body = {"required": True, "content": _content("V2InferRequest")}
    paths = doc.setdefault("paths", {})
    paths["/v2"] = {"get": _operation("v2_server_metadata", "Server name, version and supported extensions.",
                                      {"content": _content("V2ServerMetadata")}, (), [])}
    paths["/v2/health/live"] = {"get": _operation("v2_live", "200 while the server runs.",
                                                  {"content": _content("V2Live")}, (), [])}
    paths["/v2/health/ready"] = {"get": _operation("v2_ready", "200 once every model is loaded; 503 from SIGTERM on (draining).",
                                                   {"content": _content("V2Ready")}, ("503",), [])}
    for base, params, suffix in (("/v2/models/{name}", [name], ""),
                                 ("/v2/models/{name}/versions/{version}", [name, version], "_version")):
        paths[base] = {"get": _operation(f"v2_model_metadata{suffix}", "The model's metadata: versions, platform, "
                                         "input and output tensors.", {"content": _content("V2ModelMetadata")},
                                         ("404", "503"), params)}
        paths[f"{base}/ready"] = {"get": _operation(f"v2_model_ready{suffix}", "200 once the model is loaded.",
                                                    {"content": _content("V2Ready")}, ("404", "503"), params)}
        paths[f"{base}/infer"] = {"post": _operation(
            f"v2_infer{suffix}", INFER_DOC, infer_ok, ("400", "404", "408", "413", "415", "429", "503", "504"),
            params, requestBody=body)}
