"""What the harness and the tests send: MNIST test digits, encoded images, multipart bodies, the benchmark bodies and the weighted request mix."""

from __future__ import annotations

import io
import json
import os
import random
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
BOUNDARY = "harness-boundary-7c1f3a"
BATCH = 64  # images per /digits request of the benchmark
MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "BMP": "image/bmp", "GIF": "image/gif", "WEBP": "image/webp"}


def mnist_root() -> Path:
    """Where MNIST lives: $MNIST_DATA_ROOT, else ../shared/data/mnist next to the repository (holds MNIST/raw/)."""
    return Path(os.environ.get("MNIST_DATA_ROOT", REPO.parent / "shared" / "data" / "mnist"))


def _idx(path: Path, magic: int, n: int | None) -> np.ndarray:
    """An IDX file's uint8 contents, checked against its header (2051: images, 2049: labels)."""
    raw = path.read_bytes()
    dims = 3 if magic == 2051 else 1
    header = struct.unpack(f">{1 + dims}I", raw[: 4 * (1 + dims)])
    if header[0] != magic:
        raise ValueError(f"{path}: not an IDX file of magic {magic}")
    data = np.frombuffer(raw, np.uint8, offset=4 * (1 + dims)).reshape(header[1:])
    return data[:n].copy() if n is not None else data


def synthetic_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n seeded stand-ins for MNIST: the digit's glyph, white on black, 28x28 uint8, jittered in place and size."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = np.zeros((n, 28, 28), np.uint8)
    for i, label in enumerate(labels):
        canvas = Image.new("L", (28, 28))
        font = ImageFont.load_default(size=int(rng.integers(18, 24)))
        ImageDraw.Draw(canvas).text((int(rng.integers(6, 11)), int(rng.integers(0, 4))), str(label), fill=255, font=font)
        images[i] = np.asarray(canvas)
    return images, labels


def mnist_test(n: int | None = None, synthetic: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The first n (default all 10,000) MNIST test images (uint8, n x 28 x 28) and labels, read without torch.

    Without the data: seeded synthetic digits when `synthetic`, else FileNotFoundError (the tests want the real set).
    """
    raw = mnist_root() / "MNIST" / "raw"
    if (raw / "t10k-images-idx3-ubyte").is_file() or not synthetic:
        return _idx(raw / "t10k-images-idx3-ubyte", 2051, n), _idx(raw / "t10k-labels-idx1-ubyte", 2049, n)
    return synthetic_digits(n or 10_000)


def encode(image: np.ndarray | Image.Image, fmt: str = "PNG", **params) -> bytes:
    """An image file in `fmt` (PNG, JPEG, BMP, GIF, WEBP: Pillow's names) from an array or a PIL image."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def png(image: np.ndarray | Image.Image) -> bytes:
    return encode(image, "PNG")


def crafted_png(width: int, height: int, raw: bytes = b"\x00" * 64) -> bytes:
    """A tiny well-formed PNG whose header declares width x height (8-bit grey) over `raw` pixel data: a
    decompression bomb's header when large, since the data is far too short for that size."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def multipart(field: str, data: bytes, filename: str = "digit.png", content_type: str = "image/png") -> tuple[bytes, str]:
    """A one-file multipart/form-data body and its Content-Type header, built once and sent as is."""
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    return body, f"multipart/form-data; boundary={BOUNDARY}"


def as_json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()  # what a lean client sends


@dataclass(frozen=True)
class Payload:
    """One request: name (its kind in a mix), path, content type, body bytes, images it carries, method."""

    name: str
    path: str
    content_type: str | None
    body: bytes
    images: int = 0
    method: str = "POST"


READYZ = Payload("readyz", "/readyz", None, b"", method="GET")


def upload(name: str, image: np.ndarray) -> Payload:
    body, content_type = multipart("image", png(image))
    return Payload(name, "/digit/image", content_type, body, 1)


def inverted_200(image: np.ndarray) -> np.ndarray:
    """A 28x28 white-on-black digit as users send it: black on white, 200x200 (bicubic)."""
    return np.asarray(Image.fromarray(255 - image).resize((200, 200), Image.Resampling.BICUBIC))


def bench_payloads() -> dict[str, Payload]:
    """The fixed bodies of the benchmark matrix; the same bytes go to the service and to the baseline."""
    images = mnist_test(BATCH)[0]
    return {p.name: p for p in (
        Payload("temperature", "/temperature", "application/json", as_json({"readings": [35.7, 55.9]})),
        Payload("digit", "/digit", "application/json", as_json({"pixels": images[0].tolist()}), 1),
        Payload("digit_distilled", "/digit", "application/json",
                as_json({"pixels": images[0].tolist(), "model": "distilled"}), 1),
        Payload("digits64", "/digits", "application/json", as_json({"images": images.tolist()}), BATCH),
        upload("digit_image", images[0]),
        upload("digit_image200", inverted_200(images[0])),
    )}



def v2_payloads() -> dict[str, Payload]:
    """Open Inference Protocol v2 JSON bodies for /v2/models/{name}/infer (the service's, Triton's): the readings of
    bench_payloads()'s temperature, and its digit as /digit feeds the model (pixel / 255 in float32, flat)."""
    image = mnist_test(1)[0][0]
    pixels = (image.astype(np.float64) / 255).astype(np.float32).ravel()
    data = [float(str(v)) for v in pixels]  # each float32's shortest decimal: parses back to the same float32
    return {p.name: p for p in (
        Payload("v2_temperature_linear", "/v2/models/temperature-linear/infer", "application/json",
                as_json({"inputs": [{"name": "readings", "shape": [2, 1], "datatype": "FP64", "data": [35.7, 55.9]}]})),
        Payload("v2_mnist_fc", "/v2/models/mnist-fc/infer", "application/json",
                as_json({"inputs": [{"name": "images", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": data}]}), 1),
    )}

def cells(concurrency=(1, 16, 64, 256), digits64=(16,), endpoints=None) -> list[tuple[str, int]]:
    """(endpoint, concurrency) of the closed-loop matrix: every endpoint at `concurrency`, digits64 at `digits64`."""
    names = endpoints or list(bench_payloads())
    return [(n, c) for c in sorted(set(concurrency) | set(digits64)) for n in names
            if c in (digits64 if n == "digits64" else concurrency)]


def write_bodies(directory: Path, payloads: dict[str, Payload]) -> dict[str, Path]:
    """Each body in `directory/<name>.body` (wrk's Lua script reads it); returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, p in payloads.items():
        paths[name] = directory / f"{name}.body"
        paths[name].write_bytes(p.body)
    return paths


def request_mix(seed: int = 0) -> list[tuple[Payload, float]]:
    """What clients send, with weights: 35 % /temperature (1, 10 or 100 readings, both models), 35 % /digit,
    10 % /digits (32 images), 20 % /digit/image (28x28 PNGs and 112x112 inverted ones)."""
    images = mnist_test(256)[0]
    rng = random.Random(seed)
    mix: list[tuple[Payload, float]] = []
    for i in range(8):
        readings = [round(rng.uniform(-50, 120), 2) for _ in range(rng.choice([1, 10, 100]))]
        body = as_json({"readings": readings, "model": "linear" if i % 2 else "mlp"})
        mix.append((Payload("temperature", "/temperature", "application/json", body), 0.35 / 8))
    for i in range(8):
        mix.append((Payload("digit", "/digit", "application/json", as_json({"pixels": images[i].tolist()}), 1), 0.35 / 8))
    for i in range(2):
        body = as_json({"images": images[32 * i : 32 * (i + 1)].tolist()})
        mix.append((Payload("digits", "/digits", "application/json", body, 32), 0.1 / 2))
    for i in range(8):
        a = images[100 + i]
        a = np.asarray(Image.fromarray(255 - a).resize((112, 112))) if i % 2 else a
        mix.append((upload("image", a), 0.2 / 8))
    return mix


def mix_or_endpoint(endpoint: str = "mix") -> list[tuple[Payload, float]]:
    """The request mix, or one benchmark payload (`--endpoint`) alone."""
    return request_mix() if endpoint == "mix" else [(bench_payloads()[endpoint], 1.0)]
