"""The BentoML service: thermometer readings -> degrees Celsius, and 28x28 digit images -> digit."""

from __future__ import annotations

import gc
import logging
import os
from pathlib import Path
import bentoml
import numpy as np
from bentoml.exceptions import InvalidArgument
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import artifacts
from service import compat, fastpath, images, openapi, runtime, shedding
from service.middleware import ErrorShape, RequestGuard
from service.schemas import (
    DigitPrediction, DigitRequest, DigitsRequest, TemperatureRequest, TemperatureResponse, to_batch,
)

log = logging.getLogger("bentoml.service.thermodigits")  # under "bentoml" so `bentoml serve` shows it

compat.install()
fastpath.install()  # BentoML per-request overhead: see service/fastpath.py

# A fresh BENTOML_HOME still serves: the committed models/ folders are imported when missing.
artifacts.ensure_registered()

MAX_BODY_BYTES = int(os.environ.get("SERVICE_MAX_BODY_BYTES", 16 * 1024 * 1024))
BODY_TIMEOUT_S = float(os.environ.get("SERVICE_BODY_TIMEOUT_S", 10))
# Load shedding per worker (service/shedding.py): while the queue averages SHED_DEPTH / 2 or more over
# SHED_WINDOW_S, at most SHED_DEPTH are queued (0: off); and request bodies in flight up to INFLIGHT_BYTES.
SHED_DEPTH = int(os.environ.get("SERVICE_SHED_DEPTH", shedding.DEPTH))
SHED_WINDOW_S = float(os.environ.get("SERVICE_SHED_WINDOW_S", shedding.WINDOW_S))
INFLIGHT_BYTES = int(os.environ.get("SERVICE_INFLIGHT_BYTES", 64 * 1024 * 1024))
JSON = ("application/json",)


def pinned(name: str) -> bentoml.models.BentoModel:
    """The exact version committed in models/<name>/metadata.json (what a Bento built from here carries)."""
    return bentoml.models.BentoModel(artifacts.tag_of(artifacts.MODELS_DIR / name))


async def metadata(request: Request) -> JSONResponse:
    """GET /metadata: what is loaded, from which files, on which backend and device."""
    return JSONResponse(bentoml.get_current_service().describe())


# Mounted at the root: BentoML's PassiveMount only claims the paths this app has routes for.
@bentoml.asgi_app(Starlette(routes=[Route("/metadata", metadata, methods=["GET"])]))
# max_concurrency is only the hard cap on a burst (more is 429 at once); overload that lasts is shed by
# service/shedding.py. 64: a worker stalled 300 ms by the host at half its capacity comes back to ~40
# requests, which it drains in ~0.2 s (docs/reliability.md); memory is bounded by INFLIGHT_BYTES. BentoML
# divides max_concurrency among the workers: with `workers: N` in a BentoML config, set it to 64 x N there.
@bentoml.service(traffic={"timeout": 30, "max_concurrency": 64})
class ThermoDigits:
    temperature_linear = pinned("temperature-linear")
    temperature_mlp = pinned("temperature-mlp")
    mnist_fc = pinned("mnist-fc")

    def __init__(self) -> None:
        settings = runtime.Settings.from_env()
        device = runtime.select_device(settings.backend, settings.device)
        self.models = {
            stored.tag.name: runtime.load(Path(stored.path), settings, device)
            for stored in (self.temperature_linear, self.temperature_mlp, self.mnist_fc)
        }
        for m in self.models.values():
            log.info("loaded %s:%s with %s on %s (%s)", m.name, m.version, m.backend, m.device,
                     ", ".join(getattr(m.predict, "providers", [])))
        # All that is loaded by now (BentoML, the models) lives as long as the worker: keep it out of
        # every full garbage collection, which would otherwise scan ~120,000 objects (~60 ms stalls).
        gc.freeze()

    def describe(self) -> dict:
        return {"models": {name: m.describe() for name, m in self.models.items()}}

    @bentoml.api(route="/temperature", input_spec=TemperatureRequest)
    @fastpath.inline  # inference is short next to parsing the request: no thread hop
    def temperature(self, readings: list[float], model: str = "linear") -> TemperatureResponse:
        """Convert raw thermometer readings (unknown unit) to degrees Celsius."""
        m = self.models[f"temperature-{model}"]
        celsius = m.predict(np.asarray(readings, dtype=np.float64).reshape(-1, 1))
        return TemperatureResponse(celsius=celsius[:, 0].tolist(), model=m.name, version=m.version)

    def _classify(self, batch: np.ndarray) -> list[DigitPrediction]:
        probabilities = self.models["mnist-fc"].predict(batch)
        digits = probabilities.argmax(axis=1)
        return [
            DigitPrediction(digit=int(d), confidence=float(p[d]), probabilities=p.tolist())
            for d, p in zip(digits, probabilities)
        ]

    @bentoml.api(route="/digit", input_spec=DigitRequest)
    @fastpath.inline  # inference is short next to parsing the request: no thread hop
    def digit(self, pixels: list, max_value: float = 255) -> DigitPrediction:
        """Classify one 28x28 image sent as JSON pixels (white digit on black, 0..max_value)."""
        return self._classify(to_batch([pixels], max_value))[0]

    @bentoml.api(route="/digits", input_spec=DigitsRequest)
    @fastpath.inline  # inference is short next to parsing the request: no thread hop
    def digits(self, images: list, max_value: float = 255) -> list[DigitPrediction]:
        """Classify up to 1,024 images in one call; results come back in request order."""
        return self._classify(to_batch(images, max_value))

    @bentoml.api(route="/digit/image")
    def digit_image(self, image: Path) -> DigitPrediction:
        """Classify an uploaded PNG/JPEG/BMP/GIF/WebP (multipart field `image`), preprocessed like MNIST."""
        try:
            pixels = images.preprocess(image.read_bytes())
        except images.ImageError as e:
            raise InvalidArgument(str(e)) from None
        return self._classify(to_batch([pixels], 255))[0]


openapi.install(ThermoDigits)  # /docs.json as the API really is: see service/openapi.py
ThermoDigits.add_asgi_middleware(ErrorShape)
ThermoDigits.add_asgi_middleware(shedding.QueueShedder, depth=SHED_DEPTH, window=SHED_WINDOW_S, max_bytes=INFLIGHT_BYTES,
                                 unknown_size=MAX_BODY_BYTES)
ThermoDigits.add_asgi_middleware(
    RequestGuard,
    max_body_bytes=MAX_BODY_BYTES,
    body_timeout=BODY_TIMEOUT_S,
    # The image route takes uploads only: BentoML would otherwise treat a JSON string body as a URL
    # and fetch it server-side.
    content_types={"/temperature": JSON, "/digit": JSON, "/digits": JSON, "/digit/image": ("multipart/form-data",)},
)
