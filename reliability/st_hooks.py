"""Schemathesis hooks for this service: load with SCHEMATHESIS_HOOKS=reliability.st_hooks (reliability/fuzz.py does).

* Valid image files for the multipart ``image`` field: its encoding names image/png, image/jpeg, ...;
  without a strategy per media type schemathesis would send random bytes as "schema-valid" data.
* ``pixels <= max_value`` is a rule across two fields that JSON Schema cannot state. Positive (schema-
  valid) cases are repaired to satisfy it, so that they reach the model; and the one 400 that rule
  produces is excused (``filter_failure``), nothing else.
* Every request sent is counted per operation and status code, written as JSON to $FUZZ_COUNTS_FILE.
"""

from __future__ import annotations

import atexit
import collections
import io
import json
import os
import threading

import numpy as np
import schemathesis
from hypothesis import strategies as st
from PIL import Image

# Pillow modes each format can write, all accepted by the service.
MODES = {
    "PNG": ("L", "RGB", "RGBA", "LA", "1", "P", "I;16"),
    "JPEG": ("L", "RGB"),
    "BMP": ("L", "RGB", "1", "P"),
    "GIF": ("L", "P"),
    "WEBP": ("RGB", "RGBA"),
}
MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "BMP": "image/bmp", "GIF": "image/gif", "WEBP": "image/webp"}


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
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


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


@schemathesis.hook
def map_case(context, case):
    """Positive /digit(s) cases: raise max_value to the largest pixel when needed (stays within the schema)."""
    images = _images_of(case.body) if _is_positive(case) else None
    if images:
        top = _top_pixel(images)
        if top is not None and top > case.body.get("max_value", 255):
            case.body["max_value"] = top if top > 0 else 255
    return case


@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:
    """Keep every failure except a schema-valid /digit(s) body refused only for pixels above max_value."""
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
