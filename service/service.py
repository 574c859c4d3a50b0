"""The BentoML service: thermometer readings -> degrees Celsius, and 28x28 digit images -> digit."""

from __future__ import annotations

import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException, InvalidArgument
from starlette.applications import Starlette

import artifacts
from service import upstream
from service.api import routes
from service.api.admission import Admission
from service.api.auth import BearerAuth, Tokens
from service.api.errors import ErrorShape
from service.api.guard import Guard
from service.api.schemas import (
    DEFAULT_DIGIT_MODEL, DEFAULT_TEMPERATURE_MODEL, DigitImagePrediction, DigitModel, DigitPrediction, DigitRequest,
    DigitsRequest, TemperatureRequest, TemperatureResponse, Upload, to_batch,
)
from service.cpus import default_workers
from service.inference import images
from service.inference import models
from service.inference.models import Models
from service.lifecycle import Drain
from service.settings import Settings
from service.v2 import grpc_service

SETTINGS = Settings.from_env()
artifacts.ensure_registered(SETTINGS.backend)  # a fresh BENTOML_HOME serves the committed models/ folders
TAGS = {m.name: artifacts.store_tag(artifacts.MODELS_DIR / m.name, SETTINGS.backend) for m in artifacts.MODELS}
# Here, in `bentoml serve`'s own process: a bad model or device stops it, rather than a worker failing forever.
models.check({name: bentoml.models.get(tag).path for name, tag in TAGS.items()}, SETTINGS)
ADMISSION = Admission(SETTINGS.queue_target_s, SETTINGS.concurrency, SETTINGS.max_requests,
                      SETTINGS.max_inflight_bytes, floor=SETTINGS.queue_floor)
TOKENS = Tokens.from_settings(SETTINGS)  # None: no token needed; a bad token source stops the start here
DRAIN = Drain(SETTINGS.drain_s)  # this worker's, begun by SIGTERM (service/upstream/server.py)
TIMEOUT_S = 30  # traffic.timeout: 504 (HTTP) or DEADLINE_EXCEEDED (gRPC) when no answer has started by then


def loaded_models() -> Models | None:
    """This worker's models, once its service instance has loaded them."""
    try:
        return bentoml.get_current_service().models
    except (BentoMLException, AttributeError):
        return None


# The v2 protocol over gRPC, beside HTTP in every worker (SERVICE_GRPC_PORT; 0: none).
GRPC = grpc_service.Beside(SETTINGS.grpc_port, ADMISSION, TOKENS, DRAIN, SETTINGS, TIMEOUT_S, loaded_models)


def with_models(cls: type) -> type:
    """One BentoModel class attribute per registry entry, pinned to the committed version (so `bentoml build` carries it)."""
    for name, tag in TAGS.items():
        setattr(cls, name, bentoml.models.BentoModel(tag))
    return cls


@bentoml.asgi_app(Starlette(routes=routes.ROUTES))  # /, /docs, /metadata, /v2/...
# One worker per usable CPU unless BentoML's services.ThermoDigits.workers says otherwise (docs/configuration.md).
@bentoml.service(workers=default_workers(), traffic={"timeout": TIMEOUT_S})
@with_models
class ThermoDigits:
    def __init__(self) -> None:
        self.models = Models({m.name: getattr(self, m.name).path for m in artifacts.MODELS}, SETTINGS)
        upstream.after_load()

    async def __is_ready__(self) -> bool:
        """BentoML's readiness hook (/readyz 503 when false): false from SIGTERM on, while the worker drains."""
        return not DRAIN.draining

    @bentoml.api(route="/temperature", input_spec=TemperatureRequest)
    async def temperature(self, readings: list[float], model: str = DEFAULT_TEMPERATURE_MODEL) -> TemperatureResponse:
        """Convert raw thermometer readings (unknown unit) to degrees Celsius."""
        m = self.models.chosen(artifacts.TEMPERATURE, model)
        celsius = await self.models.predict(m.name, np.asarray(readings, dtype=np.float64).reshape(-1, 1))
        return TemperatureResponse(celsius=celsius[:, 0].tolist(), model=m.name, version=m.version)

    @bentoml.api(route="/digit", input_spec=DigitRequest)
    async def digit(self, pixels: list, max_value: float = 255, model: str = DEFAULT_DIGIT_MODEL) -> DigitPrediction:
        """Classify one 28x28 image sent as JSON pixels (white digit on black, 0..max_value)."""
        return (await self._classify(to_batch([pixels], max_value), model))[0]

    @bentoml.api(route="/digits", input_spec=DigitsRequest)
    async def digits(self, images: list, max_value: float = 255,
                     model: str = DEFAULT_DIGIT_MODEL) -> list[DigitPrediction]:
        """Classify up to 1,024 images in one call; results come back in request order."""
        return await self._classify(to_batch(images, max_value), model)

    @bentoml.api(route="/digit/image")
    async def digit_image(self, image: Upload, model: DigitModel = DEFAULT_DIGIT_MODEL) -> DigitImagePrediction:
        """Classify an uploaded PNG/JPEG/BMP/GIF/WebP (multipart field `image`; optional field `model`), preprocessed like MNIST."""
        try:  # on the event loop: in a thread it fought the loop for the GIL
            pixels = images.preprocess(image.data)
        except images.ImageError as e:
            raise InvalidArgument(str(e)) from None
        prediction = (await self._classify(to_batch([pixels], 255), model))[0]
        return DigitImagePrediction(**prediction.model_dump(), pixels=pixels.tolist())

    async def _classify(self, batch: np.ndarray, model: str) -> list[DigitPrediction]:
        m = self.models.chosen(artifacts.DIGITS, model)
        probabilities = await self.models.predict(m.name, batch)
        return [DigitPrediction(digit=int(p.argmax()), confidence=float(p.max()), probabilities=p.tolist(),
                                model=m.name, version=m.version)
                for p in probabilities]


upstream.install(ThermoDigits, ADMISSION, TOKENS, SETTINGS, DRAIN, (GRPC,) if SETTINGS.grpc_port else ())  # service/upstream: every patch of upstream internals
# Outermost first; BentoML's metrics and access log wrap them, so every refusal is counted and logged.
ThermoDigits.add_asgi_middleware(ErrorShape)
ThermoDigits.add_asgi_middleware(BearerAuth, tokens=TOKENS)
ThermoDigits.add_asgi_middleware(Guard, admission=ADMISSION, accepts=routes.accepts,
                                 max_body_bytes=SETTINGS.max_body_bytes, body_timeout=SETTINGS.body_timeout_s,
                                 timeout=None)  # traffic.timeout, handed over when the app is built (upstream)
