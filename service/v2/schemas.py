"""Request and response bodies of the Open Inference Protocol v2 over HTTP (service/v2/rest.py), as pydantic models.

What pydantic checks here is the envelope: field names (unknown ones are refused), types, and that
parameter values are scalars. What depends on the model (input name, datatype, shape, data) is checked by
the data plane (service/core/plane.py) against the model's metadata.json, and the parameters this server acts
on by service/v2/parameters.py. service/api/openapi.py writes these models' schemas into /docs.json.

Every list and parameter map is validated ``fail_fast``: a 16 MiB body of bad items would otherwise
cost one error object each (about 30 s of the event loop for 5 million).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema

from service.api.schemas import Strict
from service.v2.parameters import BINARY_OUTPUT, BINARY_RESPONSE, BINARY_SIZE

Str = Annotated[str, Field(strict=True)]
Int = Annotated[int, Field(strict=True)]


def _scalar(value: Any) -> Any:
    if isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value)):
        return value
    raise ValueError("a parameter must be a string, a finite number or a boolean")


SCALAR = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}
Scalar = Annotated[Any, AfterValidator(_scalar), WithJsonSchema(SCALAR)]


def _parameters(known: dict[str, dict]) -> Any:
    """$parameters: any names, scalar values; service/v2/parameters.py checks the types of the `known` ones it acts on."""
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
    model_version: SkipJsonSchema[Str] = Field(None, description="The path's version, repeated (or, when the path "
                                                                 "names none, the version to use).")
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
