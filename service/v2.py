"""The Open Inference Protocol v2 (KServe v2 REST, as spoken by Triton, KServe and MLServer) for the three models.

Routes (mounted at the root by service/routes.py), beside the typed endpoints::

    GET  /v2                                   server metadata
    GET  /v2/health/live, /v2/health/ready     200, or 503 until the models are loaded
    GET  /v2/models/{name}[/versions/{version}]         model metadata (from its metadata.json)
    GET  /v2/models/{name}[/versions/{version}]/ready   200, or 503 until loaded
    POST /v2/models/{name}[/versions/{version}]/infer   inference

Strict, like the typed endpoints: exactly one input, named and typed as the model's metadata says,
its shape the model's with the batch (-1) from 1 to 1,024 images or 10,000 readings, and `data` that
many finite JSON numbers, row-major, flat or nested exactly as `shape` (mnist-fc: within the
metadata's range [0, 1]). Unknown fields are refused; parameters that would change the answer
(classification, shared memory) are refused; other parameters are ignored. Every refusal is a 4xx
``{"error": "<sentence>"}``: 400 bad input, 404 unknown model or version, 415 content type, 503 not
loaded yet (413, 408, 429 and 504 come from service/middleware.py's Guard, which every POST passes).

The binary tensor data extension (tritonclient's default) is supported: with the header
``Inference-Header-Content-Length: n`` the body is n bytes of JSON then the raw little-endian tensor
bytes of each input that has ``"parameters": {"binary_data_size": size}``, in input order; sizes must
match shape x datatype exactly and no byte may be left over. Outputs are answered as binary data when
the request's ``binary_data_output`` or the output's ``binary_data`` parameter is true, the same way
(``Content-Type: application/octet-stream`` and the same header). The POST takes ``application/json``,
``application/octet-stream`` or no Content-Type (tritonclient sends none); the header decides.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import math
import re
from typing import Any, Awaitable, Callable, NoReturn

import bentoml
import numpy as np
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import artifacts
from service import v2_schemas as s
from service.middleware import describe
from service.schemas import MAX_IMAGES, MAX_READINGS

NAME = "thermo-digits"
try:
    VERSION = importlib.metadata.version(NAME)
except importlib.metadata.PackageNotFoundError:  # a Bento carries the code, not the installed package
    VERSION = "unknown"
EXTENSIONS = ["binary_tensor_data"]
PLATFORMS = {"onnx": "onnxruntime_onnx", "torchscript": "pytorch_torchscript"}
MAX_BATCH = {artifacts.MNIST: MAX_IMAGES, artifacts.TEMPERATURE_LINEAR: MAX_READINGS,
             artifacts.TEMPERATURE_MLP: MAX_READINGS}
HEADER = "Inference-Header-Content-Length"
JSON_TYPE, BINARY_TYPE = "application/json", "application/octet-stream"


class V2Error(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def fail(message: str, status: int = 400) -> NoReturn:
    raise V2Error(message, status)


def handler(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Answer a V2Error as the protocol's error shape, {"error": "..."}."""
    @functools.wraps(endpoint)
    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except V2Error as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)
    return wrapped


# --------------------------------------------------------------------------------------------- lookups


def current_service() -> Any:
    svc = bentoml.get_current_service()
    models = getattr(svc, "models", None)
    if not isinstance(models, dict) or not set(MAX_BATCH) <= set(models):
        fail("the models are not loaded yet; retry in a moment", 503)
    return svc


def lookup(request: Request) -> tuple[Any, Any]:
    """(service, model) named by the path; 404 names what exists."""
    svc = current_service()
    name, version = request.path_params["name"], request.path_params.get("version")
    m = svc.models.get(name)
    if m is None:
        fail(f"no model named {short(name)}; the models are {', '.join(sorted(svc.models))}", 404)
    if version is not None and version != m.version:
        fail(f"model {name!r} has no version {short(version)}; it serves version {m.version!r}", 404)
    return svc, m


def tensor(spec: dict) -> dict:
    return {"name": spec["name"], "datatype": s.DATATYPES[spec["dtype"]], "shape": list(spec["shape"])}


def model_metadata(m: Any) -> dict:
    return {"name": m.name, "versions": [m.version], "platform": PLATFORMS.get(m.backend, m.backend),
            "inputs": [tensor(t) for t in m.metadata["inputs"]], "outputs": [tensor(t) for t in m.metadata["outputs"]]}


# --------------------------------------------------------------------------------------------- parsing


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


def parse(body: bytes, header: str | None) -> tuple[s.V2InferRequest, bytes | None]:
    text, binary = split_body(body, header)
    try:
        return s.V2InferRequest.model_validate_json(text), binary
    except ValidationError as e:
        fail(describe(e.errors(include_url=False)))


def short(value: Any) -> str:
    """repr() for an error message, at most about 60 characters (a name can be megabytes long)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parameter(parameters: dict | None, key: str, where: str) -> Any:
    """A parameter this server acts on (None when absent), type-checked; refuse the ones it cannot honour."""
    for name in parameters or ():
        if name in s.UNSUPPORTED:
            fail(f"{where}.parameters.{name}: {s.UNSUPPORTED[name]} is not supported by this server")
    value = (parameters or {}).get(key)
    if key == s.BINARY_SIZE and value is not None and (type(value) is not int or value < 0):
        fail(f"{where}.parameters.{key}: expected a number of bytes (an integer >= 0), got {short(value)}")
    if key != s.BINARY_SIZE and value is not None and type(value) is not bool:
        fail(f"{where}.parameters.{key}: expected true or false, got {short(value)}")
    return value


def check_shape(shape: list[int], spec: dict, max_batch: int, where: str) -> None:
    want = spec["shape"]
    if len(shape) != len(want) or any(w != -1 and g != w for g, w in zip(shape, want)):
        fail(f"{where}.shape: expected {want} (-1: the batch, 1 to {max_batch:,}), got {short(shape)}")
    for g, w in zip(shape, want):
        if w == -1 and not 1 <= g <= max_batch:
            fail(f"{where}.shape: the batch (-1 in {want}) must be 1 to {max_batch:,}, got {g}")


def leaves(data: list, shape: list[int], where: str) -> list:
    """data, flat (product(shape) values) or nested exactly as shape, as one flat row-major list."""
    total = math.prod(shape)
    if not data or not isinstance(data[0], list):
        if len(data) != total:
            fail(f"{where}: {len(data)} values, but shape {shape} needs {total}")
        return data
    level = [data]
    for depth, size in enumerate(shape):
        below: list = []
        for i, node in enumerate(level):
            if not isinstance(node, list) or len(node) != size:
                got = f"{len(node)} items" if isinstance(node, list) else kind(node)
                fail(f"{where}{position(i, shape[:depth])}: nested data must follow shape {shape}: "
                     f"expected a list of {size} items here, got {got}")
            below.extend(node)
        level = below
    return level


def position(i: int, shape: list[int] | None) -> str:
    """'[i]' in flat data, '[a][b]...' in data nested as shape."""
    if shape is None:
        return f"[{i}]"
    return "".join(f"[{int(k)}]" for k in np.unravel_index(i, shape)) if shape else ""


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


def numbers(flat: list, nested_shape: list[int] | None, where: str) -> np.ndarray:
    """The values as float64; the first that is not a finite JSON number (string, bool, null, NaN) is refused."""
    if set(map(type, flat)) <= {float, int}:
        try:
            x = np.asarray(flat, dtype=np.float64)
        except OverflowError:
            x = None
        if x is not None and np.isfinite(x).all():
            return x
    i, value = next((i, v) for i, v in enumerate(flat) if not finite_number(v))
    fail(f"{where}{position(i, nested_shape)}: expected a finite number, got {kind(value)}")


def input_array(m: Any, request: s.V2InferRequest, binary: bytes | None) -> np.ndarray:
    """The request's one input as the model takes it, after every check."""
    spec = m.metadata["inputs"][0]
    datatype = s.DATATYPES[spec["dtype"]]
    if len(request.inputs) != 1:
        fail(f"inputs: {m.name} takes exactly one input, {spec['name']!r} ({datatype} {spec['shape']}); "
             f"got {len(request.inputs)}")
    t, where = request.inputs[0], "inputs[0]"
    if t.name != spec["name"]:
        fail(f"{where}.name: {m.name}'s input is {spec['name']!r}, got {short(t.name)}")
    if t.datatype != datatype:
        fail(f"{where}.datatype: {m.name}'s input {spec['name']!r} is {datatype}, got {short(t.datatype)}")
    check_shape(t.shape, spec, MAX_BATCH[m.name], where)
    size = parameter(t.parameters, s.BINARY_SIZE, where)
    if size is not None:
        x, shape_of = binary_input(t, size, binary, where), None
    else:
        if binary:
            fail(f"{len(binary)} bytes follow the JSON part, but no input has parameters.binary_data_size")
        if t.data is None:
            fail(f"{where}.data is missing (or send the tensor as binary data, with parameters.binary_data_size)")
        flat = leaves(t.data, t.shape, f"{where}.data")
        shape_of = t.shape if flat is not t.data else None
        x = numbers(flat, shape_of, f"{where}.data")
    low, high = spec.get("range", (-math.inf, math.inf))
    outside = (x < low) | (x > high)
    if outside.any():
        i = int(outside.argmax())
        fail(f"{where}.data{position(i, shape_of)}: {x[i]:g} is outside the model's input range [{low:g}, {high:g}]"
             + (" (divide 0-255 pixel values by 255)" if high == 1 else ""))
    cast = x.astype(spec["dtype"])
    if not np.isfinite(cast).all():
        fail(f"{where}.data: a value is beyond the {datatype} range")
    return cast.reshape(t.shape)


def binary_input(t: s.V2RequestInput, size: int, binary: bytes | None, where: str) -> np.ndarray:
    if binary is None:
        fail(f"{where}.parameters.binary_data_size is set, but the request has no binary part "
             f"(send the {HEADER} header, or the values in data)")
    if t.data is not None:
        fail(f"{where}: has both data and parameters.binary_data_size; send one")
    expected = math.prod(t.shape) * s.ITEMSIZE[t.datatype]
    if size != expected:
        fail(f"{where}.parameters.binary_data_size is {size}, but shape {t.shape} of {t.datatype} is {expected} bytes")
    if len(binary) != size:
        fail(f"{where}: the binary part after the JSON has {len(binary)} bytes, expected exactly {size}")
    x = np.frombuffer(binary, dtype="<f4" if t.datatype == "FP32" else "<f8").astype(np.float64)
    if not np.isfinite(x).all():
        i = int((~np.isfinite(x)).argmax())
        fail(f"{where}: binary value {i} (row-major) is {x[i]}, expected a finite number")
    return x


def requested_outputs(m: Any, request: s.V2InferRequest) -> list[tuple[dict, bool]]:
    """(output spec, as binary?) for each output to return, in the order asked."""
    specs = {o["name"]: o for o in m.metadata["outputs"]}
    default = bool(parameter(request.parameters, s.BINARY_RESPONSE, "request"))
    if request.outputs is None:
        return [(spec, default) for spec in specs.values()]
    chosen: list[tuple[dict, bool]] = []
    for i, o in enumerate(request.outputs):
        if o.name not in specs:
            fail(f"outputs[{i}].name: {m.name} has no output {short(o.name)}; its outputs: {', '.join(specs)}")
        if any(spec["name"] == o.name for spec, _ in chosen):
            fail(f"outputs[{i}].name: {short(o.name)} is asked for twice")
        binary = parameter(o.parameters, s.BINARY_OUTPUT, f"outputs[{i}]")
        chosen.append((specs[o.name], default if binary is None else binary))
    return chosen


# --------------------------------------------------------------------------------------------- answering


def encode(m: Any, request: s.V2InferRequest, results: list[tuple[dict, bool, np.ndarray]]) -> Response:
    head: dict[str, Any] = {"model_name": m.name, "model_version": m.version}
    if request.id is not None:
        head["id"] = request.id
    outputs, blobs = [], []
    for spec, binary, y in results:
        entry: dict[str, Any] = {"name": spec["name"], "datatype": s.DATATYPES[spec["dtype"]], "shape": list(y.shape)}
        if binary:
            blobs.append(y.astype(y.dtype.newbyteorder("<")).tobytes())
            entry["parameters"] = {"binary_data_size": len(blobs[-1])}
        else:
            entry["data"] = y.ravel().tolist()
        outputs.append(entry)
    head["outputs"] = outputs
    # allow_nan=False: finite inputs give finite outputs with these models; anything else is a bug (500)
    text = json.dumps(head, separators=(",", ":"), allow_nan=False).encode()
    if not blobs:
        return Response(text, media_type=JSON_TYPE)
    return Response(text + b"".join(blobs), media_type=BINARY_TYPE, headers={HEADER: str(len(text))})


async def predict(svc: Any, m: Any, x: np.ndarray) -> np.ndarray:
    if m.name == artifacts.MNIST:
        return await svc.classify(x)  # the adaptive batcher, shared with /digit, /digits and /digit/image
    return m.predict(x)  # microseconds


# --------------------------------------------------------------------------------------------- routes


async def server_metadata(request: Request) -> Response:
    return JSONResponse({"name": NAME, "version": VERSION, "extensions": EXTENSIONS})


async def live(request: Request) -> Response:
    return JSONResponse({"live": True})


@handler
async def ready(request: Request) -> Response:
    current_service()
    return JSONResponse({"ready": True})


@handler
async def metadata(request: Request) -> Response:
    return JSONResponse(model_metadata(lookup(request)[1]))


@handler
async def model_ready(request: Request) -> Response:
    lookup(request)
    return JSONResponse({"ready": True})


@handler
async def infer(request: Request) -> Response:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ("", JSON_TYPE, BINARY_TYPE):
        fail(f"Content-Type {short(media_type)} is not accepted here; send {JSON_TYPE}, or {BINARY_TYPE} "
             f"with the {HEADER} header (binary tensor data extension)", 415)
    if request.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity"):
        fail("compressed request bodies (Content-Encoding) are not accepted; send the body as is", 415)
    header = request.headers.get(HEADER)
    if media_type == BINARY_TYPE and header is None:
        fail(f"an {BINARY_TYPE} body needs the {HEADER} header (binary tensor data extension); "
             f"or send {JSON_TYPE}")
    svc, m = lookup(request)
    body, binary = parse(await request.body(), header)
    outputs = requested_outputs(m, body)
    x = input_array(m, body, binary)
    y = np.asarray(await predict(svc, m, x))  # each model has one output
    results = [(spec, as_binary, y.astype(spec["dtype"], copy=False)) for spec, as_binary in outputs]
    return encode(m, body, results)


MODEL = "/v2/models/{name}"
VERSIONED = "/v2/models/{name}/versions/{version}"
ROUTES = [
    Route("/v2", server_metadata, methods=["GET"]),
    Route("/v2/health/live", live, methods=["GET"]),
    Route("/v2/health/ready", ready, methods=["GET"]),
    *(r for base in (MODEL, VERSIONED) for r in (
        Route(base, metadata, methods=["GET"]),
        Route(f"{base}/ready", model_ready, methods=["GET"]),
        Route(f"{base}/infer", infer, methods=["POST"]),
    )),
]
