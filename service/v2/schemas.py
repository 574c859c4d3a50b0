"""Request and response bodies of the Open Inference Protocol v2 (service/v2/routes.py), as pydantic models.

What pydantic checks here is the envelope: field names (unknown ones are refused), types, and that
parameter values are scalars. What depends on the model (input name, datatype, shape, data) and the
parameters this server acts on are checked by service/v2/tensors.py against the model's metadata.json.
``add_to_openapi`` writes the /v2 paths and these models' schemas into /docs.json, with the served
models' names, versions and tensors as enums.

Every list and parameter map is validated ``fail_fast``: a 16 MiB body of bad items would otherwise
cost one error object each (about 30 s of the event loop for 5 million).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema

import artifacts
from service.api.schemas import Strict

DATATYPES = {"float32": "FP32", "float64": "FP64"}  # metadata.json dtype -> v2 datatype
ITEMSIZE = {"FP32": 4, "FP64": 8}
BINARY_SIZE = "binary_data_size"  # parameter names of the binary tensor data extension
BINARY_OUTPUT = "binary_data"
BINARY_RESPONSE = "binary_data_output"
# Parameters that change what a tensor means or where its data is; ignoring them would answer wrongly.
UNSUPPORTED = {"classification": "the classification extension",
               "shared_memory_region": "the shared-memory extensions",
               "shared_memory_byte_size": "the shared-memory extensions",
               "shared_memory_offset": "the shared-memory extensions"}

# Every parameter this server reads or refuses; any other is ignored.
ACTED_ON = frozenset({BINARY_SIZE, BINARY_OUTPUT, BINARY_RESPONSE, *UNSUPPORTED})

Str = Annotated[str, Field(strict=True)]
Int = Annotated[int, Field(strict=True)]


def _scalar(value: Any) -> Any:
    if isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value)):
        return value
    raise ValueError("a parameter must be a string, a finite number or a boolean")


SCALAR = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}
Scalar = Annotated[Any, AfterValidator(_scalar), WithJsonSchema(SCALAR)]


def _parameters(known: dict[str, dict]) -> Any:
    """$parameters: any names, scalar values; service/v2/tensors.py checks the types of the `known` ones it acts on."""
    return Annotated[dict[str, Scalar], Field(fail_fast=True), WithJsonSchema(
        {"type": "object", "properties": known, "additionalProperties": SCALAR})]


RequestParameters = _parameters({BINARY_RESPONSE: {
    "type": "boolean", "description": "true: answer every output as binary data (binary tensor data extension), "
                                      "unless the output says otherwise."}})
InputParameters = _parameters({BINARY_SIZE: {
    "type": "integer", "minimum": 0,
    "description": "Binary tensor data extension: this tensor's data is this many bytes of the binary part of the "
                   "body (then omit `data`). Needs the Inference-Header-Content-Length header."}})
OutputParameters = _parameters({BINARY_OUTPUT: {"type": "boolean",
                                                "description": "true: this output comes back as binary data."}})


class V2RequestInput(Strict):
    name: Str = Field(description="The model's input name: `images` (mnist-fc*) or `readings` (temperature-*).")
    shape: list[Int] = Field(fail_fast=True, description="-1 in the model's shape is the batch: [N, 1, 28, 28] "
                             "with N 1 to 1,024 (mnist-fc*), [N, 1] with N 1 to 10,000 (temperature-*).")
    datatype: Str = Field(description="The model's datatype: FP32 (mnist-fc*), FP64 (temperature-*).")
    parameters: InputParameters = Field(None)
    data: list = Field(None, description="product(shape) finite numbers in row-major order, flat or nested as "
                                         "`shape` (mnist-fc*: pixel values in [0, 1]).")


class V2RequestOutput(Strict):
    name: Str = Field(description="The model's output name: `probabilities` (mnist-fc*) or `celsius`.")
    parameters: OutputParameters = Field(None)


class V2InferRequest(Strict):
    # Accepted, not in /docs.json (INFER_DOC says it): no JSON Schema can say "the path's name", so a fuzzer's
    # schema-valid bodies would name other models (harness/st_hooks.py builds the positive cases).
    model_name: SkipJsonSchema[Str] = Field(None, description="The path's model name, repeated (KServe's SDK sends "
                                                              "it); another name is refused.")
    model_version: SkipJsonSchema[Str] = Field(None, description="The path's version (or, when the path names "
                                                                 "none, the version served), repeated.")
    id: Str = Field(None, description="Echoed in the response.")
    parameters: RequestParameters = Field(None)
    inputs: list[V2RequestInput] = Field(min_length=1, fail_fast=True, description="Exactly one input tensor.")
    outputs: list[V2RequestOutput] = Field(None, min_length=1, fail_fast=True,
                                           description="Which outputs to return (default: all).")


class V2ResponseOutputParameters(BaseModel):
    binary_data_size: int = Field(description="Bytes of this output in the binary part of the response.")


class V2ResponseOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[float] = Field(None, description="Row-major, flat. Absent when the output is sent as binary data.")
    parameters: V2ResponseOutputParameters = Field(None)


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str = Field(None, description="The request's id, when it had one.")
    outputs: list[V2ResponseOutput]


class V2Tensor(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1: any size (the batch).")


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str = Field(description="onnxruntime_onnx or pytorch_torchscript (SERVICE_BACKEND).")
    inputs: list[V2Tensor]
    outputs: list[V2Tensor]


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class V2Live(BaseModel):
    live: bool


class V2Ready(BaseModel):
    ready: bool


COMPONENTS = (V2InferRequest, V2InferResponse, V2ModelMetadata, V2ServerMetadata, V2Live, V2Ready)


# --------------------------------------------------------------------------------------------- /docs.json

TAG = "Open Inference Protocol (v2)"
ERRORS = {
    "400": "Invalid input: the body, tensor name, datatype, shape or data is not what the model takes.",
    "404": "No model of that name, or not the version it serves.",
    "415": "The Content-Type (or Content-Encoding) is not one this endpoint takes.",
    "503": "The models are not loaded yet, or (readiness) the server is draining after SIGTERM.",
}  # and 408, 413, 429, 504 as every POST (service/api/openapi.py's API_ERRORS)
INFER_DOC = (
    "Run the model on one input tensor. The body may repeat the model's name and version as `model_name` and "
    "`model_version` (KServe's SDK sends `model_name`): they must be the path's (400 otherwise; a `model_version` "
    "where the path names none must be the version served, 404 otherwise). Binary tensor data extension: with the "
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
    from service.api.openapi import to_openapi30

    found: dict[str, Any] = {}
    for cls in COMPONENTS:
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
    from service.api.openapi import API_ERRORS

    responses = {"200": {"description": "Successful Response", **ok}}
    responses.update({code: {"description": ERRORS.get(code) or API_ERRORS[code], "content": _content("Error")}
                      for code in errors})
    return {"tags": [TAG], "operationId": operation_id, "description": description,
            "parameters": parameters, "responses": responses, **extra}


def add_to_openapi(doc: dict[str, Any], models: list[dict] | None = None) -> None:
    """Add the /v2 paths and their schemas to an OpenAPI 3.0 document (service/api/openapi.py calls this).

    `models`: the served models' metadata.json contents (default: the committed models/*/metadata.json,
    whose versions the service pins).
    """
    if models is None:
        models = [artifacts.read_metadata(artifacts.MODELS_DIR / n) for n in artifacts.MODEL_NAMES]
    doc.setdefault("components", {}).setdefault("schemas", {}).update(component_schemas(models))
    name = {"name": "name", "in": "path", "required": True, "description": "The model's name.",
            "schema": {"type": "string", "enum": [m["name"] for m in models]}}
    version = {"name": "version", "in": "path", "required": True, "description": "The version the model serves.",
               "schema": {"type": "string", "enum": sorted({m["version"] for m in models})}}
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
