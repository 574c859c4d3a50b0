"""The data plane: every transport's one way to a model. It chooses the version (``Route``), checks a request's tensors against the model's spec, predicts, copies the request to the shadow version, and describes the models.

* ``predict(model, version, x, key)``: the typed endpoints' call; `x` has been validated by their schemas.
* ``infer(InferRequest)``: the Open Inference Protocol's (HTTP and gRPC): exactly one input, named and typed as the
  model's metadata says, its shape the model's with the batch (-1) from 1 to its task's most rows
  (artifacts.MODELS), every value finite and inside the metadata's ``range``; the outputs asked for, each once.
* ``model_metadata``, ``model_ready``, ``server_ready``, ``server_metadata``.

Every refusal is a ``ServingError``; the transports map it (service/core/errors.py). ``routes`` is replaced whole
when the serving state changes (service/repository.py): a request uses the route it found first to the end.
A shadow copy runs after the answer, as its own task, only when admission has room for background work
(``Admission.background``); it never changes or delays an answer, and its failures are counted, never raised.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import math
import time
from typing import Any, Callable

import numpy as np

import artifacts
from service.core.errors import Kind, fail, short
from service.core.protocol import DATATYPES, InferInput, InferRequest, InferResponse, OutputTensor
from service.core.routing import DEFAULT, Route
from service.inference.versions import Version

log = logging.getLogger("bentoml.service.thermodigits")

NAME = "thermo-digits"
try:
    SERVER_VERSION = importlib.metadata.version(NAME)
except importlib.metadata.PackageNotFoundError:  # a Bento carries the code, not the installed package
    SERVER_VERSION = "unknown"
EXTENSIONS = ["binary_tensor_data", "model_repository"]
PLATFORMS = {"onnx": "onnxruntime_onnx", "torchscript": "pytorch_torchscript"}

SKIPPED, FAILED, DONE = "skipped", "failed", "done"  # what became of a shadow copy
# (version, role, ok, seconds) of each prediction
RequestObserver = Callable[[Version, str, bool, float], None]
# (the version that answered, the shadow, its outputs, the shadow's outputs (None unless DONE), outcome, seconds)
ShadowObserver = Callable[[Version, Version, np.ndarray, np.ndarray | None, str, float], None]
PayloadObserver = Callable[[Version, str, np.ndarray, np.ndarray], None]  # (version, role, inputs, outputs)


def tensor(spec: dict) -> dict:
    return {"name": spec["name"], "datatype": DATATYPES[spec["dtype"]], "shape": list(spec["shape"])}


class DataPlane:
    """A worker's models as routes, and the calls every transport makes."""

    def __init__(self, background: Callable[[], Any] | None = None, ready: Callable[[], bool] = lambda: True,
                 on_request: RequestObserver | None = None, on_shadow: ShadowObserver | None = None,
                 on_payload: PayloadObserver | None = None):
        self.routes: dict[str, Route] | None = None  # None until the first serving state is applied
        self.background = background  # () -> a place for background work (context manager), or None: no room
        self.ready_check = ready  # False while the worker drains
        self.on_request = on_request
        self.on_shadow = on_shadow
        self.on_payload = on_payload
        self.shadows: set[asyncio.Task] = set()

    # ----------------------------------------------------------------------------------------- lookups

    def loaded_routes(self) -> dict[str, Route]:
        if self.routes is None:
            fail("the models are not loaded yet; retry in a moment", Kind.UNAVAILABLE)
        return self.routes

    def route(self, name: str) -> Route:
        routes = self.loaded_routes()
        found = routes.get(name)
        if found is None:
            if name in artifacts.MODEL_NAMES:
                fail(f"model {name!r} is not loaded on this server (an admin can load it: POST "
                     f"/v2/repository/models/{name}/load)", Kind.NOT_FOUND)
            fail(f"no model named {short(name)}; the models are {', '.join(sorted(routes))}", Kind.NOT_FOUND)
        return found

    def version(self, name: str, version: str | None) -> Version:
        """The loaded version `version` of `name` (None: the default)."""
        route = self.route(name)
        return route.default if version is None else route.choose(version)[0]

    def server_ready(self) -> bool:
        return self.routes is not None and self.ready_check()

    def model_ready(self, name: str, version: str | None) -> bool:
        self.version(name, version)
        return True

    @staticmethod
    def server_metadata() -> dict:
        return {"name": NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}

    def model_metadata(self, name: str, version: str | None = None) -> dict:
        """The v2 model metadata: its versions (the default first), platform and tensors; `version` only checks."""
        route = self.route(name)
        chosen = self.version(name, version)
        versions = [route.default.version, *(v for v in route.versions if v != route.default.version)]
        return {"name": name, "versions": versions, "platform": PLATFORMS.get(chosen.loaded.backend, chosen.loaded.backend),
                "inputs": [tensor(t) for t in chosen.metadata["inputs"]],
                "outputs": [tensor(t) for t in chosen.metadata["outputs"]]}

    def describe(self) -> dict:
        """GET /metadata: each model's versions (metadata.json plus backend, device, providers) and their roles."""
        routes = self.loaded_routes()
        return {"models": {name: {**route.default.describe(), "default": route.default.version,
                                  "roles": route.roles(),
                                  "versions": {v: loaded.describe() for v, loaded in route.versions.items()}}
                           for name, route in routes.items()}}

    # ----------------------------------------------------------------------------------------- predicting

    async def predict(self, name: str, version: str | None, x: np.ndarray, key: str | None = None
                      ) -> tuple[Version, np.ndarray]:
        """(the version that answered, its outputs) for the rows `x` of model `name`."""
        route = self.route(name)
        chosen, role = route.choose(version, key)
        started = time.perf_counter()
        ok = False
        try:
            y = np.asarray(await chosen.predict(x))
            ok = True
        finally:
            if self.on_request is not None:
                self.on_request(chosen, role, ok, time.perf_counter() - started)
        if self.on_payload is not None:
            self.on_payload(chosen, role, x, y)
        if role == DEFAULT and (shadow := route.shadows(role)) is not None:
            self.shadow(chosen, shadow, x, y)
        return chosen, y

    def shadow(self, answered: Version, shadow: Version, x: np.ndarray, y: np.ndarray) -> None:
        """Run `x` on `shadow` after this answer, if there is room for background work; count how it compares."""
        place = self.background() if self.background is not None else None
        if place is None:
            if self.on_shadow is not None:
                self.on_shadow(answered, shadow, y, None, SKIPPED, 0.0)  # no room
            return
        task = asyncio.get_running_loop().create_task(self._shadow(place, answered, shadow, x, y))
        self.shadows.add(task)
        task.add_done_callback(self.shadows.discard)

    async def _shadow(self, place: Any, answered: Version, shadow: Version, x: np.ndarray, y: np.ndarray) -> None:
        out, outcome = None, FAILED
        with place:  # held from here, whatever happens: even a copy cancelled before it ran gives its place back
            await asyncio.sleep(0)  # the answer goes out first
            started = time.perf_counter()
            try:
                out, outcome = np.asarray(await shadow.predict(x)), DONE
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("the shadow version %s:%s failed on a copy of a request", shadow.name, shadow.version,
                            exc_info=True)
        if self.on_shadow is not None:
            self.on_shadow(answered, shadow, y, out, outcome, time.perf_counter() - started)

    async def infer(self, request: InferRequest) -> InferResponse:
        """The Open Inference Protocol's inference, whatever the transport."""
        route = self.route(request.model)
        if request.version is not None:
            route.choose(request.version)  # 404 before the tensors are read
        spec_source = route.default if request.version is None else route.versions[request.version]
        outputs = self.requested_outputs(spec_source, request)
        x = self.input_array(spec_source, request)
        version, y = await self.predict(request.model, request.version, x, request.key)
        return InferResponse(version.name, version.version, [
            OutputTensor(spec["name"], DATATYPES[spec["dtype"]], y.astype(spec["dtype"], copy=False), binary)
            for spec, binary in outputs], id=request.id)

    @staticmethod
    def requested_outputs(version: Version, request: InferRequest) -> list[tuple[dict, bool]]:
        """(output spec, as binary?) for each output to return, in the order asked."""
        specs = {o["name"]: o for o in version.metadata["outputs"]}
        if request.outputs is None:
            return [(spec, request.binary_output) for spec in specs.values()]
        chosen: list[tuple[dict, bool]] = []
        for i, o in enumerate(request.outputs):
            if o.name not in specs:
                fail(f"outputs[{i}].name: {version.name} has no output {short(o.name)}; its outputs: {', '.join(specs)}")
            if any(spec["name"] == o.name for spec, _ in chosen):
                fail(f"outputs[{i}].name: {short(o.name)} is asked for twice")
            chosen.append((specs[o.name], request.binary_output if o.binary is None else o.binary))
        return chosen

    @staticmethod
    def input_array(version: Version, request: InferRequest) -> np.ndarray:
        """The request's one input as the model takes it, after every check of the spec."""
        spec = version.metadata["inputs"][0]
        datatype = DATATYPES[spec["dtype"]]
        if len(request.inputs) != 1:
            fail(f"inputs: {version.name} takes exactly one input, {spec['name']!r} ({datatype} {spec['shape']}); "
                 f"got {len(request.inputs)}")
        t = request.inputs[0]
        where = "inputs[0]"
        if t.name != spec["name"]:
            fail(f"{where}.name: {version.name}'s input is {spec['name']!r}, got {short(t.name)}")
        if t.datatype != datatype:
            fail(f"{where}.datatype: {version.name}'s input {spec['name']!r} is {datatype}, got {short(t.datatype)}")
        check_declared_shape(list(t.shape), spec, version.task.max_rows, where)
        x = t.as_numpy()
        if refusal := t.refusal():
            fail(refusal)
        check_values(t, x, spec, datatype)
        cast = x.astype(spec["dtype"], copy=False)
        if cast is not x and not np.isfinite(cast).all():
            fail(f"{t.where}: a value is beyond the {datatype} range")
        return cast.reshape(t.shape)


def check_declared_shape(shape: list[int], spec: dict, max_batch: int, where: str) -> None:
    """The declared `shape` against the model's (-1: the batch, 1 to `max_batch`)."""
    want = spec["shape"]
    if len(shape) != len(want) or any(w != -1 and g != w for g, w in zip(shape, want)):
        fail(f"{where}.shape: expected {want} (-1: the batch, 1 to {max_batch:,}), got {short(shape)}")
    for g, w in zip(shape, want):
        if w == -1 and not 1 <= g <= max_batch:
            fail(f"{where}.shape: the batch (-1 in {want}) must be 1 to {max_batch:,}, got {g}")


def check_values(t: InferInput, x: np.ndarray, spec: dict, datatype: str) -> None:
    """Every value finite and inside the spec's range (mnist-fc*: [0, 1]); the first that is not is named.

    Two reductions decide for the usual request (NaN makes the minimum NaN; an infinity is the minimum or maximum);
    only a refused one is searched for its first bad value."""
    flat = x.reshape(-1)
    if not flat.size:
        return
    low, high = spec.get("range", (-math.inf, math.inf))
    least, most = float(flat.min()), float(flat.max())
    if math.isfinite(least) and math.isfinite(most) and low <= least and most <= high:
        return
    finite = np.isfinite(flat)
    if not finite.all():
        i = int((~finite).argmax())
        shown = "NaN" if np.isnan(flat[i]) else "Infinity" if flat[i] > 0 else "-Infinity"
        fail(f"{t.where}{t.position(i)}: expected a finite number, got {shown}")
    i = int(((flat < low) | (flat > high)).argmax())
    fail(f"{t.where}{t.position(i)}: {flat[i]:g} is outside the model's input range [{low:g}, {high:g}]"
         + (" (divide 0-255 pixel values by 255)" if high == 1 else ""))
