"""Schemathesis hooks for this service: load with SCHEMATHESIS_HOOKS=harness.st_hooks (harness/fuzz.py does).

* Valid image files for the multipart ``image`` field: its encoding names image/png, image/jpeg, ...;
  without a strategy per media type schemathesis would send random bytes as "schema-valid" data.
* ``pixels <= max_value`` is a rule across two fields that JSON Schema cannot state. Positive (schema-
  valid) cases are repaired to satisfy it, so that they reach the model; and the one 400 that rule
  produces is excused (``filter_failure``).
* An upload's text field generated as a list of none or one item is sent as multipart sends lists, a part per
  item: on the wire the field left out or one value, valid. Its acceptance is excused (``filter_failure``);
  nothing else is.
* Every request sent is counted per operation and status code, written as JSON to $FUZZ_COUNTS_FILE.
"""

from __future__ import annotations

import atexit
import collections
import json
import math
import os
import threading

import numpy as np
import schemathesis
from hypothesis import strategies as st
from PIL import Image

import artifacts
import artifacts.serving
from testkit.payloads import MEDIA_TYPES, encode

# Pillow modes each format can write, all accepted by the service.
MODES = {
    "PNG": ("L", "RGB", "RGBA", "LA", "1", "P", "I;16"),
    "JPEG": ("L", "RGB"),
    "BMP": ("L", "RGB", "1", "P"),
    "GIF": ("L", "P"),
    "WEBP": ("RGB", "RGBA"),
}


@st.composite
def image_files(draw, fmt: str) -> bytes:
    """A small valid image file: random size, mode and content (noise, a blob, or blank)."""
    width, height = draw(st.integers(1, 96)), draw(st.integers(1, 96))
    mode = draw(st.sampled_from(MODES[fmt]))
    kind = draw(st.sampled_from(["noise", "blob", "blank"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    grey = np.zeros((height, width), np.uint8)
    if kind == "noise":
        grey = rng.integers(0, 256, (height, width), dtype=np.uint8)
    elif kind == "blob":
        y0, x0 = rng.integers(0, height), rng.integers(0, width)
        grey[y0 : y0 + max(1, height // 3), x0 : x0 + max(1, width // 3)] = 255
        if draw(st.booleans()):
            grey = 255 - grey  # dark ink on white paper
    img = Image.fromarray(grey, "L")
    if mode == "I;16":
        img = Image.fromarray(grey.astype(np.uint16) * 257)  # mode I;16
    elif mode == "RGBA":
        alpha = rng.integers(0, 256, (height, width), dtype=np.uint8)
        img = Image.merge("RGBA", (*img.convert("RGB").split(), Image.fromarray(alpha, "L")))
    elif mode == "LA":
        img = Image.merge("LA", (img, Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), "L")))
    elif mode != "L":
        img = img.convert(mode)
    return encode(img, fmt)


for _fmt, _media_type in MEDIA_TYPES.items():
    schemathesis.openapi.media_type(_media_type, image_files(_fmt))


# ---------------------------------------------------------------------------------------------
# pixels <= max_value

MAX_RULE = "is above max_value="


def _images_of(body) -> list | None:
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("pixels"), list):
        return [body["pixels"]]
    if isinstance(body.get("images"), list):
        return body["images"]
    return None


def _top_pixel(images: list) -> float | None:
    values = [v for image in images if isinstance(image, list) for row in image if isinstance(row, list)
              for v in row if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return max(values) if values else None


def _is_positive(case) -> bool:
    meta = getattr(case, "meta", None)
    return meta is not None and meta.generation.mode.is_positive


V2_INFER = ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")
V2_MODELS = {name: artifacts.read_metadata(artifacts.serving.default_dir(name)) for name in artifacts.MODEL_NAMES}
V2_DATATYPES = {"float32": "FP32", "float64": "FP64"}
V2_DROP = {"binary_data_size", "classification", "shared_memory_region", "shared_memory_byte_size",
           "shared_memory_offset"}  # binary data needs a binary body; the rest are refused by design


def _finite_numbers(value) -> list[float]:
    if isinstance(value, list):
        return [x for v in value for x in _finite_numbers(v)]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= 1e300:
        return [float(value)]
    return []


def _v2_params(params) -> dict:
    return {k: v for k, v in params.items() if k not in V2_DROP} if isinstance(params, dict) else {}


def _v2_consistent(case) -> None:
    """A positive /v2 infer case: rebuild its input tensor from the generated numbers so that it fits the model
    (the length of `data` = the product of `shape`, the model's name and datatype: rules JSON Schema cannot state)."""
    model = V2_MODELS[case.path_parameters["name"]]
    if "version" in case.path_parameters:
        case.path_parameters = {**case.path_parameters, "version": model["version"]}
    spec = model["inputs"][0]
    generated = case.body["inputs"][0] if case.body.get("inputs") else {}
    values = _finite_numbers(generated.get("data")) or [0.0]
    per_row = math.prod(d for d in spec["shape"] if d != -1)
    batch = min(max(1, len(values) // per_row), 8)
    values = (values * math.ceil(batch * per_row / len(values)))[: batch * per_row]
    low, high = spec.get("range", (-math.inf, math.inf))
    tensor = {"name": spec["name"], "datatype": V2_DATATYPES[spec["dtype"]],
              "shape": [batch if d == -1 else d for d in spec["shape"]],
              "data": [min(max(v, low), high) for v in values]}
    if _v2_params(generated.get("parameters")):
        tensor["parameters"] = _v2_params(generated["parameters"])
    body = {**case.body, "inputs": [tensor]}  # a new dict: the coverage phase shares bodies between cases
    if "parameters" in body:
        body["parameters"] = _v2_params(body["parameters"])
    if body.get("outputs"):
        first = body["outputs"][0]
        output = {"name": model["outputs"][0]["name"]}
        if _v2_params(first.get("parameters")):
            output["parameters"] = _v2_params(first["parameters"])
        body["outputs"] = [output]
    case.body = body


@schemathesis.hook
def map_case(context, case):
    """Positive cases: /v2 infer tensors made consistent with the model; for /digit(s), max_value raised to the
    largest pixel when needed (both stay within the schema)."""
    if _is_positive(case) and case.operation.path in V2_INFER and isinstance(case.body, dict):
        _v2_consistent(case)
        return case
    images = _images_of(case.body) if _is_positive(case) else None
    if images:
        top = _top_pixel(images)
        if top is not None and top > case.body.get("max_value", 255):
            case.body["max_value"] = top if top > 0 else 255
    return case


def _same_on_the_wire(case) -> bool:
    """A multipart body carries a list as one part per item: an upload's text field generated as a list of none or one
    item is sent exactly as the field left out or given as one value, which the service rightly accepts."""
    return case.operation.path == "/digit/image" and isinstance(case.body, dict) and any(
        isinstance(v, list) and len(v) <= 1 for k, v in case.body.items() if k != "image")


@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:
    """Keep every failure except a schema-valid /digit(s) body refused only for pixels above max_value, and a
    "schema-violating" upload that the multipart encoding made indistinguishable from a valid one."""
    if type(failure).__name__ == "AcceptedNegativeData" and _same_on_the_wire(case):
        return False
    if type(failure).__name__ != "RejectedPositiveData" or response.status_code != 400:
        return True
    try:
        error = json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError):
        return True
    return not (case.operation.path in ("/digit", "/digits") and MAX_RULE in error)


# ---------------------------------------------------------------------------------------------
# Counting what was sent

COUNTS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
_lock = threading.Lock()


@schemathesis.hook
def after_call(context, case, response):
    label = f"{case.method.upper()} {case.operation.path}"
    with _lock:
        COUNTS[label][str(response.status_code)] += 1


def _dump() -> None:
    path = os.environ.get("FUZZ_COUNTS_FILE")
    if path:
        with open(path, "w") as f:
            json.dump({label: dict(c) for label, c in sorted(COUNTS.items())}, f, indent=1, sort_keys=True)


atexit.register(_dump)
