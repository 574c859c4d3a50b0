"""The request bodies every benchmark sends: the same bytes go to the service and to the baseline."""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
MNIST_RAW = Path(os.environ.get("MNIST_DATA_ROOT", REPO.parent / "shared" / "data" / "mnist")) / "MNIST" / "raw"
BATCH = 64  # images per /digits request
BOUNDARY = "benchboundary7f3a"


@dataclass(frozen=True)
class Payload:
    """One endpoint's request: path, content type, body bytes, and how many images it carries."""

    name: str
    path: str
    content_type: str
    body: bytes
    images: int  # 0 for /temperature


def mnist_images(n: int) -> np.ndarray:
    """The first n MNIST test images (uint8, n x 28 x 28); seeded noise blobs when the data is absent."""
    path = MNIST_RAW / "t10k-images-idx3-ubyte"
    if path.is_file():
        return np.frombuffer(path.read_bytes(), np.uint8, offset=16).reshape(-1, 28, 28)[:n].copy()
    rng = np.random.default_rng(0)  # without MNIST the numbers still mean something: same size and work
    return (rng.random((n, 28, 28)) ** 4 * 255).astype(np.uint8)


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def multipart(field: str, filename: str, content_type: str, data: bytes) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def all_payloads() -> dict[str, Payload]:
    images = mnist_images(BATCH)
    as_json = lambda obj: json.dumps(obj, separators=(",", ":")).encode()  # noqa: E731 - what a lean client sends
    return {p.name: p for p in (
        Payload("temperature", "/temperature", "application/json", as_json({"readings": [35.7, 55.9]}), 0),
        Payload("digit", "/digit", "application/json", as_json({"pixels": images[0].tolist()}), 1),
        Payload("digits64", "/digits", "application/json", as_json({"images": images.tolist()}), BATCH),
        Payload("digit_image", "/digit/image", f"multipart/form-data; boundary={BOUNDARY}",
                multipart("image", "digit.png", "image/png", png(images[0])), 1),
    )}


def write(directory: Path) -> dict[str, Path]:
    """Write each body to `directory/<name>.body` (wrk's Lua script reads it) and return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, p in all_payloads().items():
        paths[name] = directory / f"{name}.body"
        paths[name].write_bytes(p.body)
    return paths
