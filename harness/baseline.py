"""The baseline: a bare Starlette app that loads the same ONNX files and answers the same four endpoints with the same JSON.

It shares the service's model loader (service.runtime, so the same ONNX Runtime session options) and
image preprocessing (service.images), and nothing of BentoML: no pydantic validation, middleware,
metrics or tracing. Run it with `uvicorn harness.baseline:app --workers N`.
"""

from __future__ import annotations

import asyncio.base_events
import json
import socket

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import artifacts
import artifacts.serving
from service.api.schemas import DEFAULT_DIGIT_MODEL
from service.inference import images, runtime
from service.settings import Settings


def _set_nodelay(sock: socket.socket) -> None:
    # `uvicorn --workers N` binds its listening socket as socket.socket(AF_INET), proto 0, and
    # asyncio only sets TCP_NODELAY on accepted sockets whose proto is IPPROTO_TCP; without it a
    # response written in two pieces (headers, body) waits ~40 ms for the client's delayed ACK.
    # The service's sockets (circus, detected from the fd) have it; give the baseline the same.
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


asyncio.base_events._set_nodelay = _set_nodelay

settings = Settings.from_env()
device = runtime.select_device(settings.backend, settings.device)
models = {name: runtime.load(artifacts.serving.default_dir(name), settings, device) for name in artifacts.MODEL_NAMES}
DIGIT_MODELS = {choice: m.name for choice, m in artifacts.choices(artifacts.DIGITS).items()}


def bad(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


def digit_model(fields) -> runtime.LoadedModel:
    """The digit model a request's `model` field names, JSON body or form (KeyError when it names none)."""
    return models[DIGIT_MODELS[fields.get("model", DEFAULT_DIGIT_MODEL)]]


def classify(batch: np.ndarray, m: runtime.LoadedModel) -> list[dict]:
    probabilities = m.predict(batch)
    return [{"digit": int(d), "confidence": float(p[d]), "probabilities": p.tolist(), "model": m.name,
             "version": m.version} for d, p in zip(probabilities.argmax(axis=1), probabilities)]


def to_batch(images_: list, max_value: float) -> np.ndarray:
    return (np.asarray(images_, dtype=np.float32) / np.float32(max_value)).reshape(-1, 1, 28, 28)


async def temperature(request: Request) -> Response:
    try:
        body = json.loads(await request.body())
        m = models[f"temperature-{body.get('model', 'linear')}"]
        x = np.asarray(body["readings"], dtype=np.float64).reshape(-1, 1)
    except (ValueError, KeyError, TypeError):
        return bad("bad temperature request")
    return JSONResponse({"celsius": m.predict(x)[:, 0].tolist(), "model": m.name, "version": m.version})


async def digit(request: Request) -> Response:
    try:
        body = json.loads(await request.body())
        batch = to_batch([body["pixels"]], body.get("max_value", 255))
        m = digit_model(body)
    except (ValueError, KeyError, TypeError):
        return bad("bad digit request")
    return JSONResponse(classify(batch, m)[0])


async def digits(request: Request) -> Response:
    try:
        body = json.loads(await request.body())
        batch = to_batch(body["images"], body.get("max_value", 255))
        m = digit_model(body)
    except (ValueError, KeyError, TypeError):
        return bad("bad digits request")
    return JSONResponse(classify(batch, m))


async def digit_image(request: Request) -> Response:
    async with request.form() as form:
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            return bad("send the file in field: image")
        data = await upload.read()
        try:
            m = digit_model(form)
        except KeyError:
            return bad("bad digit_image request")
    try:
        pixels = images.preprocess(data)
    except images.ImageError as e:
        return bad(str(e))
    return JSONResponse({**classify(to_batch([pixels], 255), m)[0], "pixels": pixels.tolist()})  # as the service


async def readyz(_: Request) -> Response:
    return Response("ok")


app = Starlette(routes=[
    Route("/temperature", temperature, methods=["POST"]),
    Route("/digit", digit, methods=["POST"]),
    Route("/digits", digits, methods=["POST"]),
    Route("/digit/image", digit_image, methods=["POST"]),
    Route("/readyz", readyz, methods=["GET"]),
])
