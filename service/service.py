"""The BentoML service: thermometer readings -> degrees Celsius, and 28x28 digit images -> digit."""

from __future__ import annotations

import functools
import gc
import logging
from pathlib import Path

import bentoml
import numpy as np
from bentoml.exceptions import InvalidArgument
from starlette.applications import Starlette

import artifacts
from service import compat, door, fastpath, images, openapi, routes, runtime
from service.admission import Admission
from service.batching import Batcher
from service.middleware import ErrorShape, Guard
from service.schemas import (
    DEFAULT_DIGIT_MODEL, DIGIT_MODELS, DigitImagePrediction, DigitModel, DigitPrediction, DigitRequest, DigitsRequest,
    TemperatureRequest, TemperatureResponse, Upload, to_batch,
)
from service.settings import Settings

log = logging.getLogger("bentoml.service.thermodigits")  # under "bentoml" so `bentoml serve` shows it
SETTINGS = Settings.from_env()

compat.install()
fastpath.install()  # BentoML per-request overhead, and the request deadline: see service/fastpath.py
# A fresh BENTOML_HOME still serves: the committed models/ folders are imported when missing.
artifacts.ensure_registered(SETTINGS.backend)

# What each endpoint feeds its model and reads back; a model whose metadata says otherwise is refused at start.
TEMPERATURE_SPEC = (artifacts.TensorSpec("readings", "float64", (-1, 1)),
                    artifacts.TensorSpec("celsius", "float64", (-1, 1)))
DIGIT_SPEC = (artifacts.TensorSpec("images", "float32", (-1, 1, 28, 28)),
              artifacts.TensorSpec("probabilities", "float32", (-1, 10)))
SPECS = {artifacts.TEMPERATURE_LINEAR: TEMPERATURE_SPEC, artifacts.TEMPERATURE_MLP: TEMPERATURE_SPEC,
         **{name: DIGIT_SPEC for name in DIGIT_MODELS.values()}}
FULL_GC_EVERY = 100  # middle-generation collections between two full ones (CPython: 10); see __init__
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
batch_images = bentoml.metrics.Histogram(
    name="model_batch_images", documentation="Images per digit-model call (adaptive batching)",
    labelnames=["model"], buckets=BATCH_BUCKETS)
batch_requests = bentoml.metrics.Histogram(
    name="model_batch_requests", documentation="Requests sharing one digit-model call (adaptive batching)",
    labelnames=["model"], buckets=BATCH_BUCKETS)


def pinned(name: str) -> bentoml.models.BentoModel:
    """The exact version committed in models/<name>/metadata.json, in this backend's store entry."""
    return bentoml.models.BentoModel(artifacts.store_tag(artifacts.MODELS_DIR / name, SETTINGS.backend))


@bentoml.asgi_app(Starlette(routes=routes.ROUTES))  # /, /docs, /metadata, /v2/...: service/routes.py
# timeout: the request deadline (504), enforced by service/middleware.py's Guard (service/fastpath.py).
@bentoml.service(traffic={"timeout": 30})
class ThermoDigits:
    temperature_linear = pinned(artifacts.TEMPERATURE_LINEAR)
    temperature_mlp = pinned(artifacts.TEMPERATURE_MLP)
    mnist_fc = pinned(artifacts.MNIST)
    mnist_fc_distilled = pinned(artifacts.MNIST_DISTILLED)

    def __init__(self) -> None:
        device = runtime.select_device(SETTINGS.backend, SETTINGS.device)
        # Each model's store entry is the class attribute named like it ("mnist-fc" -> mnist_fc).
        stored = {name: getattr(self, name.replace("-", "_")) for name in artifacts.MODEL_NAMES}
        self.models = {name: runtime.load(Path(ref.path), SETTINGS, device, SPECS[name]) for name, ref in stored.items()}
        for m in self.models.values():
            log.info("loaded %s:%s with %s on %s (%s)", m.name, m.version, m.backend, m.device,
                     ", ".join(getattr(m.predict, "providers", [])))
        # One adaptive batcher per digit model: requests for the same model share its calls.
        self.batchers = {name: Batcher(self.models[name].predict, SETTINGS.max_batch, name,
                                       observe=functools.partial(self._observe, name))
                         for name in DIGIT_MODELS.values()}
        # All that is loaded by now (BentoML, the models) lives as long as the worker: keep it out of
        # every full garbage collection, which would otherwise scan ~120,000 objects (~60 ms stalls).
        gc.freeze()
        # What a full collection finds under load is the state of requests in flight (~100 objects each:
        # tasks, coroutines, closures), all alive: 50,000 objects, 10-40 ms of a stalled event loop about
        # once a second in a 3x flood, collecting nothing. A tenth as often (100 middle-generation
        # collections between full ones, CPython's default 10): the flood's refusals p99 58 -> 39 ms, goodput +12 %
        # (2026-11-28, four runs each; docs/reliability.md). Cyclic garbage is still collected young.
        gc.set_threshold(*gc.get_threshold()[:2], FULL_GC_EVERY)

    @staticmethod
    def _observe(name: str, images: int, requests: int) -> None:
        batch_images.labels(model=name).observe(images)
        batch_requests.labels(model=name).observe(requests)

    def describe(self) -> dict:
        return {"models": {name: m.describe() for name, m in self.models.items()}}

    async def _predict(self, batch: np.ndarray, model: str) -> list[DigitPrediction]:
        m = self.models[DIGIT_MODELS[model]]
        probabilities = await self.batchers[m.name](batch)
        return [DigitPrediction(digit=int(p.argmax()), confidence=float(p.max()), probabilities=p.tolist(),
                                model=m.name, version=m.version)
                for p in probabilities]

    @bentoml.api(route="/temperature", input_spec=TemperatureRequest)
    async def temperature(self, readings: list[float], model: str = "linear") -> TemperatureResponse:
        """Convert raw thermometer readings (unknown unit) to degrees Celsius."""
        m = self.models[f"temperature-{model}"]  # microseconds: no thread, no batching
        celsius = m.predict(np.asarray(readings, dtype=np.float64).reshape(-1, 1))
        return TemperatureResponse(celsius=celsius[:, 0].tolist(), model=m.name, version=m.version)

    @bentoml.api(route="/digit", input_spec=DigitRequest)
    async def digit(self, pixels: list, max_value: float = 255, model: str = DEFAULT_DIGIT_MODEL) -> DigitPrediction:
        """Classify one 28x28 image sent as JSON pixels (white digit on black, 0..max_value)."""
        return (await self._predict(to_batch([pixels], max_value), model))[0]

    @bentoml.api(route="/digits", input_spec=DigitsRequest)
    async def digits(self, images: list, max_value: float = 255,
                     model: str = DEFAULT_DIGIT_MODEL) -> list[DigitPrediction]:
        """Classify up to 1,024 images in one call; results come back in request order."""
        return await self._predict(to_batch(images, max_value), model)

    @bentoml.api(route="/digit/image")
    async def digit_image(self, image: Upload, model: DigitModel = DEFAULT_DIGIT_MODEL) -> DigitImagePrediction:
        """Classify an uploaded PNG/JPEG/BMP/GIF/WebP (multipart field `image`; optional field `model`), preprocessed like MNIST."""
        try:  # 0.1-0.6 ms, on the event loop: in a thread it fought the loop for the GIL (-35 % uploads/s)
            pixels = images.preprocess(image.data)
        except images.ImageError as e:
            raise InvalidArgument(str(e)) from None
        prediction = (await self._predict(to_batch([pixels], 255), model))[0]
        return DigitImagePrediction(**prediction.model_dump(), pixels=pixels.tolist())


openapi.install(ThermoDigits)  # /docs.json as the API really is: see service/openapi.py
# The worker's one queue: service/door.py refuses for it before the ASGI stack, Guard admits what reaches it.
ADMISSION = Admission(SETTINGS.queue_target_s, SETTINGS.concurrency, SETTINGS.max_requests,
                      SETTINGS.max_inflight_bytes)
door.install(ADMISSION, SETTINGS.max_body_bytes)
# Our middleware, outermost first. BentoML's metrics and access log wrap both, so refusals are counted and logged.
ThermoDigits.add_asgi_middleware(ErrorShape)
ThermoDigits.add_asgi_middleware(
    Guard,
    admission=ADMISSION,
    content_types=routes.content_types,
    max_body_bytes=SETTINGS.max_body_bytes,
    body_timeout=SETTINGS.body_timeout_s,
    timeout=None,  # traffic.timeout, filled in when BentoML builds the app (service/fastpath.py)
)
