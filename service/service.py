"""The BentoML service: thermometer readings -> degrees Celsius, and 28x28 digit images -> digit; every endpoint predicts through the data plane (service/core/plane.py)."""

from __future__ import annotations

import asyncio
import atexit
from pathlib import Path

import bentoml
import numpy as np
from bentoml.exceptions import InvalidArgument, NotFound
from starlette.applications import Starlette

import artifacts
import artifacts.serving
from service import metrics, monitoring, upstream
from service.api import routes
from service.api.access import BearerAuth
from service.api.errors import ErrorShape
from service.api.guard import Guard
from service.api.schemas import (
    DEFAULT_DIGIT_MODEL, DEFAULT_TEMPERATURE_MODEL, DigitImagePrediction, DigitModel, DigitPrediction, DigitRequest,
    DigitsRequest, TemperatureRequest, TemperatureResponse, Upload, Version, to_batch,
)
from service.core.admission import Admission
from service.core.auth import Access
from service.core.errors import Kind, ServingError
from service.core.plane import DataPlane
from service.cpus import default_workers
from service.inference import images, runtime
from service.lifecycle import Drain
from service.payload_log import PayloadLog
from service.replica import Replica
from service.repository import Repository
from service.settings import Settings
from service.v2 import grpc_service

SETTINGS = Settings.from_env()
SERVING_FILE = Path(SETTINGS.serving_file) if SETTINGS.serving_file else artifacts.serving.SERVING_FILE
SERVING = artifacts.serving.read(SERVING_FILE)  # a bad serving file stops the start here, with its message
PATHS = {(name, v): artifacts.locate(name, v, SETTINGS.backend) for name, entry in SERVING.models.items()
         for v in entry.served()}  # every version served is in the store (imported from models/ if need be)
# The workers' shared state: made by the process that is no worker (bentoml serve's own), inherited by its workers.
REPLICA, MADE_HERE = Replica.for_process(SERVING, SERVING.digest(), worker=bentoml.server_context.worker_index is not None)
if MADE_HERE:  # in `bentoml serve`'s own process, before any worker: a bad version or device stops the start here
    runtime.check(PATHS, SETTINGS)  # rather than failing workers forever (each worker verifies what it loads)
    atexit.register(REPLICA.remove)
ADMISSION = Admission(SETTINGS.queue_target_s, SETTINGS.concurrency, SETTINGS.max_requests,
                      SETTINGS.max_inflight_bytes, floor=SETTINGS.queue_floor)
ACCESS = Access.from_settings(SETTINGS)  # a bad token source stops the start here
DRAIN = Drain(SETTINGS.drain_s)  # this worker's, begun by SIGTERM (service/upstream/server.py)
TIMEOUT_S = 30  # traffic.timeout: 504 (HTTP) or DEADLINE_EXCEEDED (gRPC) when no answer has started by then
MONITOR = monitoring.Monitor()  # what the models answer, per version (this worker's share)
PAYLOADS = PayloadLog(SETTINGS.payload_share, Path(SETTINGS.payload_dir), SETTINGS.payload_keep_days)
PLANE = DataPlane(background=ADMISSION.background, ready=lambda: not DRAIN.draining, on_request=metrics.on_request,
                  on_shadow=metrics.on_shadow, on_payload=PAYLOADS.log if SETTINGS.payload_share else None)
CORE = grpc_service.Core(PLANE, ADMISSION, ACCESS, DRAIN, TIMEOUT_S,
                         grpc_service.record if SETTINGS.grpc_access_log else grpc_service.count)
GRPC = grpc_service.Beside(SETTINGS.grpc_port, lambda: CORE, SETTINGS.max_body_bytes)  # v2 over gRPC in every worker


def with_models(cls: type) -> type:
    """One BentoModel class attribute per version served (so that `bentoml build` carries exactly those)."""
    for name, version in PATHS:
        attribute = f"{name}_{version}".replace("-", "_")
        setattr(cls, attribute, bentoml.models.BentoModel(artifacts.tag(name, version, SETTINGS.backend)))
    return cls


def refuse(error: ServingError) -> Exception:
    """A ServingError as the BentoML exception that answers its status from a typed endpoint."""
    return (NotFound if error.kind is Kind.NOT_FOUND else InvalidArgument)(str(error))


@bentoml.asgi_app(Starlette(routes=routes.make(lambda: ThermoDigits.openapi_spec.asdict())))
# One worker per usable CPU unless BentoML's services.ThermoDigits.workers says otherwise (docs/configuration.md).
@bentoml.service(workers=default_workers(), traffic={"timeout": TIMEOUT_S})
@with_models
class ThermoDigits:
    def __init__(self) -> None:
        self.plane = PLANE
        device = runtime.select_device(SETTINGS.backend, SETTINGS.device)
        self.repository = CORE.repository = Repository(PLANE, REPLICA, SETTINGS, device, SERVING_FILE,
                                                       observers=[metrics.on_batch, *([MONITOR.observe] if
                                                                  SETTINGS.prediction_stats else [])],
                                                       on_retire=[MONITOR.forget])
        self.repository.start()
        upstream.after_load()

    @bentoml.on_startup
    async def follow_model_changes(self) -> None:
        """On this worker's event loop: follow the replica's model state and the serving file; score drift."""
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self.repository.watch()), loop.create_task(MONITOR.run()),
                      loop.create_task(metrics.report_worker(lambda: not DRAIN.draining))]

    @bentoml.on_shutdown
    def leave_the_replica(self) -> None:
        """This worker no longer takes part in model changes (a change does not wait for it)."""
        REPLICA.leave()

    async def __is_ready__(self) -> bool:
        """BentoML's readiness hook (/readyz 503 when false): false from SIGTERM on, while the worker drains."""
        return not DRAIN.draining

    async def _predict(self, model: str, version: str | None, x: np.ndarray, ctx: bentoml.Context | None):
        key = ctx.request.headers.get("x-routing-key") if ctx is not None else None  # None: called in process
        try:
            return await PLANE.predict(model, version, x, key)
        except ServingError as e:
            raise refuse(e) from None

    @bentoml.api(route="/temperature", input_spec=TemperatureRequest)
    async def temperature(self, readings: list[float], model: str = DEFAULT_TEMPERATURE_MODEL,
                          version: str | None = None, ctx: bentoml.Context = None) -> TemperatureResponse:
        """Convert raw thermometer readings (unknown unit) to degrees Celsius."""
        name = artifacts.choices(artifacts.TEMPERATURE)[model].name
        answered, celsius = await self._predict(name, version, np.asarray(readings, np.float64).reshape(-1, 1), ctx)
        return TemperatureResponse(celsius=celsius[:, 0].tolist(), model=answered.name, version=answered.version)

    @bentoml.api(route="/digit", input_spec=DigitRequest)
    async def digit(self, pixels: list, max_value: float = 255, model: str = DEFAULT_DIGIT_MODEL,
                    version: str | None = None, ctx: bentoml.Context = None) -> DigitPrediction:
        """Classify one 28x28 image sent as JSON pixels (white digit on black, 0..max_value)."""
        return (await self._classify(to_batch([pixels], max_value), model, version, ctx))[0]

    @bentoml.api(route="/digits", input_spec=DigitsRequest)
    async def digits(self, images: list, max_value: float = 255, model: str = DEFAULT_DIGIT_MODEL,
                     version: str | None = None, ctx: bentoml.Context = None) -> list[DigitPrediction]:
        """Classify up to 1,024 images in one call; results come back in request order."""
        return await self._classify(to_batch(images, max_value), model, version, ctx)

    @bentoml.api(route="/digit/image")
    async def digit_image(self, image: Upload, model: DigitModel = DEFAULT_DIGIT_MODEL, version: Version = None,
                          ctx: bentoml.Context = None) -> DigitImagePrediction:
        """Classify an uploaded PNG/JPEG/BMP/GIF/WebP (multipart field `image`; optional fields `model` and `version`), preprocessed like MNIST."""
        try:  # on the event loop: in a thread it fought the loop for the GIL
            pixels = images.preprocess(image.data)
        except images.ImageError as e:
            raise InvalidArgument(str(e)) from None
        prediction = (await self._classify(to_batch([pixels], 255), model, version, ctx))[0]
        return DigitImagePrediction(**prediction.model_dump(), pixels=pixels.tolist())

    async def _classify(self, batch: np.ndarray, model: str, version: str | None,
                        ctx: bentoml.Context | None) -> list[DigitPrediction]:
        name = artifacts.choices(artifacts.DIGITS)[model].name
        answered, probabilities = await self._predict(name, version, batch, ctx)
        return [DigitPrediction(digit=int(p.argmax()), confidence=float(p.max()), probabilities=p.tolist(),
                                model=answered.name, version=answered.version)
                for p in probabilities]


# service/upstream: every patch of upstream internals
upstream.install(ThermoDigits, ADMISSION, ACCESS, SETTINGS, DRAIN, (GRPC,) if SETTINGS.grpc_port else (), TIMEOUT_S)
# Outermost first; BentoML's metrics and access log wrap them, so every refusal is counted and logged.
ThermoDigits.add_asgi_middleware(ErrorShape)
ThermoDigits.add_asgi_middleware(BearerAuth, access=ACCESS)
ThermoDigits.add_asgi_middleware(Guard, admission=ADMISSION, accepts=routes.accepts,
                                 max_body_bytes=SETTINGS.max_body_bytes, body_timeout=SETTINGS.body_timeout_s,
                                 timeout=None)  # traffic.timeout, handed over when the app is built (upstream)
