"""Reading an Open Inference Protocol v2 request's tensors against a model's spec (JSON or binary), and encoding the answer.

Every check refuses with V2Error (a 400 unless it says otherwise); service/v2/routes.py answers it in the
error shape. The rules are in service/v2/routes.py's docstring.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

import numpy as np
from pydantic import ValidationError
from starlette.responses import Response

import artifacts
from service.api import shapes
from service.api.errors import describe
from service.v2 import schemas as s

HEADER = "Inference-Header-Content-Length"
JSON_TYPE, BINARY_TYPE = "application/json", "application/octet-stream"


class V2Error(Exception):
    """A request the protocol refuses: its message is the answer's error sentence."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def fail(message: str, status: int = 400) -> NoReturn:
    raise V2Error(message, status)


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


def validate(request: dict) -> s.V2InferRequest:
    """A request given as Python objects (the gRPC servicer builds one from its protobuf), checked as parse() checks JSON."""
    try:
        return s.V2InferRequest.model_validate(request)
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


def check_declared_shape(shape: list[int], spec: dict, max_batch: int, where: str) -> None:
    """The `shape` field of a request against the model's (-1: the batch, 1 to `max_batch`)."""
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
    try:
        return shapes.flatten(data, shape)
    except shapes.ShapeMismatch as e:
        got = e.got_text() if isinstance(e.got, list) else kind(e.got)
        fail(f"{where}{''.join(f'[{i}]' for i in e.path)}: nested data must follow shape {shape}: "
             f"expected a list of {e.expected} items here, got {got}")


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


def input_array(m: Any, request: s.V2InferRequest, binary: bytes | None, raw: bytes | None = None,
                values: str | None = None) -> np.ndarray:
    """The request's one input as the model takes it, after every check.

    `binary`: the HTTP body's part after the JSON (binary tensor data extension). `raw`: the input's bytes when
    they come apart from the request (gRPC's raw_input_contents), instead of `data`. `values`: what the messages
    call where the values are (default inputs[0].data; gRPC: its contents field or raw_input_contents[0]).
    """
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
    check_declared_shape(t.shape, spec, artifacts.model(m.name).task.max_rows, where)
    size = parameter(t.parameters, s.BINARY_SIZE, where)
    values = values or f"{where}.data"
    if raw is not None:
        x, shape_of = raw_values(raw, t, values), None
    elif size is not None:
        x, shape_of = binary_input(t, size, binary, where), None
    else:
        if binary:
            fail(f"{len(binary)} bytes follow the JSON part, but no input has parameters.binary_data_size")
        if t.data is None:
            fail(f"{where}.data is missing (or send the tensor as binary data, with parameters.binary_data_size)")
        flat = leaves(t.data, t.shape, values)
        shape_of = t.shape if flat is not t.data else None
        x = numbers(flat, shape_of, values)
    low, high = spec.get("range", (-math.inf, math.inf))
    outside = (x < low) | (x > high)
    if outside.any():
        i = int(outside.argmax())
        fail(f"{values}{position(i, shape_of)}: {x[i]:g} is outside the model's input range [{low:g}, {high:g}]"
             + (" (divide 0-255 pixel values by 255)" if high == 1 else ""))
    cast = x.astype(spec["dtype"])
    if not np.isfinite(cast).all():
        fail(f"{values}: a value is beyond the {datatype} range")
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
    return raw_values(binary, t, where)


def raw_values(raw: bytes, t: s.V2RequestInput, where: str) -> np.ndarray:
    """A tensor's raw little-endian bytes (row-major) as float64: exactly shape x datatype bytes, every value finite."""
    expected = math.prod(t.shape) * s.ITEMSIZE[t.datatype]
    if len(raw) != expected:
        fail(f"{where}: {len(raw)} bytes, but shape {t.shape} of {t.datatype} is {expected} bytes")
    x = np.frombuffer(raw, dtype="<f4" if t.datatype == "FP32" else "<f8").astype(np.float64)
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
