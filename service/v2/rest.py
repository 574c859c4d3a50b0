"""The Open Inference Protocol v2 over HTTP (KServe v2 REST, as Triton, KServe and MLServer speak it): thin glue that parses a body into the data plane's neutral request (service/core/protocol.py) and encodes its answer.

Routes (mounted at the root by service/api/routes.py), beside the typed endpoints::

    GET  /v2                                   server metadata
    GET  /v2/health/live, /v2/health/ready     200; ready: 503 until the models are loaded and from SIGTERM on
    GET  /v2/models/{name}[/versions/{version}]         model metadata: its versions (the default first), tensors
    GET  /v2/models/{name}[/versions/{version}]/ready   200, or 503 until loaded
    POST /v2/models/{name}[/versions/{version}]/infer   inference (no version: the default, or the canary's share)

What the data plane checks is in service/core/plane.py. Here: the JSON envelope (service/v2/schemas.py: unknown
fields refused, parameter values scalars), where the values are, and what OIP clients send beside the tensors,
each handled on purpose (tests/http/test_kserve.py, tests/http/test_tritonclient.py, tests/http/test_v2.py):

* ``model_name``, ``model_version`` (KServe's SDK puts ``model_name`` in every body): must be the path's, else
  400 naming both; a ``model_version`` where the path names none addresses that version, like a path.
  Not in /docs.json (service/v2/schemas.py says why).
* ``id`` (tritonclient, KServe's SDK: a UUID each time, MLServer): echoed.
* parameters: service/v2/parameters.py. tritonclient's ``sequence_id``, ``priority``, ``timeout`` and the rest,
  MLServer's ``content_type`` and any other scalar are ignored; MLServer's ``headers`` (an object) is refused.
* ``data``: product(shape) finite JSON numbers, row-major, flat or nested exactly as ``shape``.
* JSON ``null`` for an optional field is refused (the protocol has no null there).

The binary tensor data extension (tritonclient's default): with the header ``Inference-Header-Content-Length: n``
the body is n bytes of JSON then the raw little-endian tensor bytes of each input that has
``"parameters": {"binary_data_size": size}``, in input order; sizes must match shape x datatype exactly and no byte
may be left over. Outputs are answered as binary data when the request's ``binary_data_output`` or the output's
``binary_data`` parameter is true, the same way (``Content-Type: application/octet-stream`` and the same header).
The POST takes ``application/json``, ``application/octet-stream`` or no Content-Type (tritonclient sends none).

A routing key (``X-Routing-Key``) keeps a client on one side of a canary (service/core/routing.py).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.api import shapes
from service.api.current import plane
from service.api.errors import describe, error_response
from service.core.errors import Kind, ServingError, fail, short
from service.core.plane import DataPlane
from service.core.protocol import ITEMSIZE, LITTLE_ENDIAN, InferInput, InferRequest, InferResponse, RequestedOutput
from service.v2 import schemas as s
from service.v2.parameters import BINARY_OUTPUT, BINARY_RESPONSE, BINARY_SIZE, parameter

HEADER = "Inference-Header-Content-Length"
JSON_TYPE, BINARY_TYPE = "application/json", "application/octet-stream"
ROUTING_KEY = "x-routing-key"


# --------------------------------------------------------------------------------------------- the request


class JsonInput(InferInput):
    """An input whose values are JSON numbers in ``data``, flat or nested as its shape."""

    def __init__(self, t: s.V2RequestInput, where: str):
        super().__init__(t.name, t.datatype, t.shape, f"{where}.data")
        self.data = t.data
        self.nested = False

    def as_numpy(self) -> np.ndarray:
        flat = leaves(self.data, list(self.shape), self.where)
        self.nested = flat is not self.data
        return numbers(flat, self)

    def position(self, i: int) -> str:
        if not self.nested:
            return f"[{i}]"
        return "".join(f"[{int(k)}]" for k in np.unravel_index(i, self.shape)) if self.shape else ""


class BinaryInput(InferInput):
    """An input whose values are `size` bytes of the body after the JSON part (binary tensor data extension)."""

    def __init__(self, t: s.V2RequestInput, where: str, size: int, blob: bytes):
        super().__init__(t.name, t.datatype, t.shape, where)
        self.size, self.blob = size, blob

    def as_numpy(self) -> np.ndarray:
        expected = math.prod(self.shape) * ITEMSIZE[self.datatype]
        if self.size != expected:
            fail(f"{self.where}.parameters.binary_data_size is {self.size}, but shape {list(self.shape)} of "
                 f"{self.datatype} is {expected} bytes")
        if len(self.blob) != self.size:
            fail(f"{self.where}: the binary part after the JSON has {len(self.blob)} bytes, expected exactly {self.size}")
        return np.frombuffer(self.blob, dtype=LITTLE_ENDIAN[self.datatype])


def leaves(data: list, shape: list[int], where: str) -> list:
    """data, flat (product(shape) values) or nested exactly as shape, as one flat row-major list."""
    total = math.prod(shape)
    if not data or not isinstance(data[0], list):
        if len(data) != total:
            fail(f"{where}: {len(data)} values, but shape {shape} needs {total}")
        return data
    try:
        return shapes.flatten(data, shape)
    except shapes.ShapeMismatch as e:
        got = e.got_text() if isinstance(e.got, list) else kind(e.got)
        fail(f"{where}{''.join(f'[{i}]' for i in e.path)}: nested data must follow shape {shape}: "
             f"expected a list of {e.expected} items here, got {got}")


def kind(value: Any) -> str:
    """How a JSON value reads in an error message."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, (int, float)):
        return f"the number {value:g}" if finite_number(value) else "a number beyond the float range"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def finite_number(value: Any) -> bool:
    """A JSON number that is a finite float64 (as numpy converts it: an int too large overflows)."""
    if type(value) is float:
        return math.isfinite(value)
    try:
        return type(value) is int and math.isfinite(float(value))
    except OverflowError:
        return False


def numbers(flat: list, t: JsonInput) -> np.ndarray:
    """The values as float64; the first that is not a finite JSON number (string, bool, null, NaN) is refused."""
    if set(map(type, flat)) <= {float, int}:
        try:
            x = np.asarray(flat, dtype=np.float64)
        except OverflowError:
            x = None
        if x is not None and np.isfinite(x).all():
            return x
    t.nested = flat is not t.data
    i, value = next((i, v) for i, v in enumerate(flat) if not finite_number(v))
    fail(f"{t.where}{t.position(i)}: expected a finite number, got {kind(value)}")


def split_body(body: bytes, header: str | None) -> tuple[bytes, bytes | None]:
    """(JSON part, binary part or None when the request is plain JSON)."""
    if header is None:
        return body, None
    if not re.fullmatch(r"[0-9]{1,12}", header.strip()):
        fail(f"{HEADER} must be the JSON part's length in bytes, got {short(header)}")
    n = int(header)
    if n > len(body):
        fail(f"{HEADER} is {n}, but the body has only {len(body)} bytes")
    return body[:n], body[n:]


def parse(body: bytes, header: str | None, model: str, version: str | None, key: str | None = None) -> InferRequest:
    """The neutral request of a v2 HTTP body addressed to `model` (at `version`, when the path names one)."""
    text, binary = split_body(body, header)
    try:
        request = s.V2InferRequest.model_validate_json(text)
    except ValidationError as e:
        fail(describe(e.errors(include_url=False)))
    if request.model_name is not None and request.model_name != model:
        fail(f"model_name: the body names model {short(request.model_name)} but the path names {model!r}; "
             "send the same name or leave model_name out")
    if request.model_version is not None:
        if version is not None and request.model_version != version:
            fail(f"model_version: the body names version {short(request.model_version)} but the path names "
                 f"{version!r}; send the same version or leave model_version out")
        version = request.model_version
    inputs: list[InferInput] = []
    offset = 0
    for i, t in enumerate(request.inputs):
        where = f"inputs[{i}]"
        size = parameter(t.parameters, BINARY_SIZE, where)
        if size is None:
            inputs.append(JsonInput(t, where))
            continue
        if binary is None:
            fail(f"{where}.parameters.binary_data_size is set, but the request has no binary part "
                 f"(send the {HEADER} header, or the values in data)")
        if t.data is not None:
            fail(f"{where}: has both data and parameters.binary_data_size; send one")
        inputs.append(BinaryInput(t, where, size, binary[offset:offset + size] if i < len(request.inputs) - 1
                                  else binary[offset:]))
        offset += size
    if binary and not any(isinstance(t, BinaryInput) for t in inputs):
        fail(f"{len(binary)} bytes follow the JSON part, but no input has parameters.binary_data_size")
    for t in inputs:
        if isinstance(t, JsonInput) and t.data is None:
            fail(f"{t.where} is missing (or send the tensor as binary data, with parameters.binary_data_size)")
    outputs = None
    if request.outputs is not None:
        outputs = [RequestedOutput(o.name, parameter(o.parameters, BINARY_OUTPUT, f"outputs[{i}]"))
                   for i, o in enumerate(request.outputs)]
    return InferRequest(model, version, inputs, outputs, request.id,
                        bool(parameter(request.parameters, BINARY_RESPONSE, "request")), key)


# --------------------------------------------------------------------------------------------- the answer


def encode(answer: InferResponse) -> Response:
    head: dict[str, Any] = {"model_name": answer.model, "model_version": answer.version}
    if answer.id is not None:
        head["id"] = answer.id
    outputs, blobs = [], []
    for o in answer.outputs:
        entry: dict[str, Any] = {"name": o.name, "datatype": o.datatype, "shape": list(o.array.shape)}
        if o.binary:
            blobs.append(o.little_endian_bytes())
            entry["parameters"] = {"binary_data_size": len(blobs[-1])}
        else:
            entry["data"] = o.array.ravel().tolist()
        outputs.append(entry)
    head["outputs"] = outputs
    # allow_nan=False: finite inputs give finite outputs with these models; anything else is a bug (500)
    text = json.dumps(head, separators=(",", ":"), allow_nan=False).encode()
    if not blobs:
        return Response(text, media_type=JSON_TYPE)
    return Response(text + b"".join(blobs), media_type=BINARY_TYPE, headers={HEADER: str(len(text))})


# --------------------------------------------------------------------------------------------- routes


async def server_metadata(request: Request) -> Response:
    return JSONResponse(DataPlane.server_metadata())


async def live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(request: Request) -> Response:
    data_plane = plane()
    data_plane.loaded_routes()  # 503 until loaded
    if not data_plane.server_ready():
        fail("the server is stopping (draining after SIGTERM); send requests to another replica", Kind.UNAVAILABLE)
    return JSONResponse({"ready": True})


async def metadata(request: Request) -> Response:
    return JSONResponse(plane().model_metadata(request.path_params["name"], request.path_params.get("version")))


async def model_ready(request: Request) -> Response:
    plane().model_ready(request.path_params["name"], request.path_params.get("version"))
    return JSONResponse({"ready": True})


async def infer(request: Request) -> Response:
    """The Content-Type was checked by the guard (service/api/routes.py's accepts); the header decides the framing."""
    if request.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity"):
        fail("compressed request bodies (Content-Encoding) are not accepted; send the body as is", Kind.MEDIA_TYPE)
    header = request.headers.get(HEADER)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == BINARY_TYPE and header is None:
        fail(f"an {BINARY_TYPE} body needs the {HEADER} header (binary tensor data extension); or send {JSON_TYPE}")
    data_plane = plane()
    name, version = request.path_params["name"], request.path_params.get("version")
    data_plane.route(name)  # 404 / 503 before the body is parsed
    parsed = parse(await request.body(), header, name, version, request.headers.get(ROUTING_KEY))
    return encode(await data_plane.infer(parsed))


def answered(endpoint):
    """A route whose ServingError is answered in the error shape."""
    async def route(request: Request) -> Response:
        try:
            return await endpoint(request)
        except ServingError as e:
            return error_response(e)
    route.__name__ = endpoint.__name__
    return route


MODEL = "/v2/models/{name}"
VERSIONED = "/v2/models/{name}/versions/{version}"
ROUTES = [
    Route("/v2", answered(server_metadata), methods=["GET"]),
    Route("/v2/health/live", live, methods=["GET"]),
    Route("/v2/health/ready", answered(ready), methods=["GET"]),
    *(r for base in (MODEL, VERSIONED) for r in (
        Route(base, answered(metadata), methods=["GET"]),
        Route(f"{base}/ready", answered(model_ready), methods=["GET"]),
        Route(f"{base}/infer", answered(infer), methods=["POST"]),
    )),
]
