"""The Open Inference Protocol v2 over gRPC on a worker's event loop: thin glue from GRPCInferenceService (service/v2/proto/) and grpc.health.v1.Health to the data plane, admission, tokens and the model repository (``await start(...)``).

What each RPC answers::

    ServerLive      live: true
    ServerReady     ready: the models are loaded and the worker is not draining (service.lifecycle.Drain)
    ModelReady      ready: true; NOT_FOUND for a model or version that is not loaded, UNAVAILABLE until loaded
    ServerMetadata  name, version, extensions (as GET /v2)
    ModelMetadata   as GET /v2/models/{name}[/versions/{version}]
    ModelInfer      as POST /v2/models/{name}[/versions/{version}]/infer (service/core/plane.py checks the tensors)
    RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload
                    as POST /v2/repository/index, /v2/repository/models/{name}/load and /unload (service/repository.py)
    grpc.health.v1.Health  Check, Watch and List of "" and "inference.GRPCInferenceService": SERVING, or
                    NOT_SERVING while ServerReady would say false; any other service: NOT_FOUND (Check)

ModelInfer parses the protobuf into the data plane's neutral request (service/core/protocol.py), its values straight
into numpy: from ``raw_input_contents`` (one entry per input, raw little-endian bytes, exactly shape x datatype:
``np.frombuffer``, no copy) or from ``contents`` (the field of its datatype: fp32_contents or fp64_contents), never
both. Outputs come back in ``raw_output_contents`` when the inputs came raw (tritonclient.grpc and KServe's client by
default) or when ``binary_data_output`` (request) or ``binary_data`` (an output) is true, and in ``contents``
otherwise; the protocol cannot mix the two in one answer, so one output asked raw makes them all raw. Parameters are
HTTP's (service/v2/parameters.py); a value outside the protocol's bool, int64 and string (tritonclient.grpc sends
``priority`` as Triton's uint64_param) is ignored like any parameter this server does not read, and refused for one
it reads. ``binary_data_size``, which KServe's client sends beside each raw input, must be that input's raw byte
count. A routing key in the metadata ``x-routing-key`` keeps a client on one side of a canary.

Every refusal is a ``ServingError``, answered with its one-sentence message and its code from the one table
(service/core/errors.py), its headers as trailing metadata (``retry-after``, ``www-authenticate``): tokens per
scope (service/core/auth.py; ServerLive, ServerReady and Health are open, the repository RPCs need an admin token),
admission and the deadline as HTTP's (service/core/admission.py, sized by the message's bytes). A message over
Settings.max_body_bytes is refused by gRPC itself (RESOURCE_EXHAUSTED) before the servicer sees it. Only a bug
answers INTERNAL. ``observe(method, code, seconds, peer)`` is called once per RPC: a worker's is ``count`` (in
/metrics: ``grpc_server_handled_total``, ``grpc_server_handling_seconds``), or ``record`` with SERVICE_GRPC_ACCESS_LOG=1
(also a line in BentoML's access log).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc
import numpy as np
import prometheus_client
from google.protobuf import message_factory
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.core import access_log
from service.core.admission import Admission
from service.core.auth import ADMIN, PREDICT, Access
from service.core.errors import Kind, ServingError, fail
from service.core.plane import DataPlane
from service.core.protocol import ITEMSIZE, LITTLE_ENDIAN, InferInput, InferRequest, InferResponse, RequestedOutput
from service.v2.parameters import ACTED_ON, BINARY_OUTPUT, BINARY_RESPONSE, BINARY_SIZE, parameter
from service.v2.proto import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc as pb_grpc

log = logging.getLogger("bentoml.service.thermodigits")

DESCRIPTORS = {d.full_name: d for d in (pb.DESCRIPTOR.services_by_name["GRPCInferenceService"],
                                        health_pb2.DESCRIPTOR.services_by_name["Health"])}
SERVICE, HEALTH = DESCRIPTORS  # inference.GRPCInferenceService, grpc.health.v1.Health
OPEN = frozenset({"ServerLive", "ServerReady", "Check", "Watch", "List"})
REPOSITORY = frozenset({"RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"})
WATCH_POLL_S = 0.5  # Health.Watch re-reads the status this often (Drain.begin() only sets a number)
CLOSING_S = 0.1  # once the drain is over, calls are answered UNAVAILABLE this long before grpcio stops
ROUTING_KEY = "x-routing-key"

Observe = Callable[[str, grpc.StatusCode, float, str], None]  # method, code, seconds, peer


def code(error: ServingError) -> grpc.StatusCode:
    return grpc.StatusCode[error.kind.grpc_code]


def scope_of(method: str) -> str | None:
    return None if method in OPEN else ADMIN if method in REPOSITORY else PREDICT


def message_types(service: str, method: str) -> tuple[Any, Any]:
    """The request and response message classes of `service`'s `method`."""
    m = DESCRIPTORS[service].methods_by_name[method]
    return message_factory.GetMessageClass(m.input_type), message_factory.GetMessageClass(m.output_type)


def parsed(request_type: Any, request: Any) -> Any:
    """The request as its message (the server hands over its bytes unparsed); 400 for bytes that are not one.

    grpcio answers INTERNAL when its own deserializer fails, so the servicer parses: a malformed message is the
    client's mistake."""
    if isinstance(request, request_type):
        return request
    try:
        return request_type.FromString(request)
    except DecodeError as e:
        fail(f"the message is not a valid {request_type.DESCRIPTOR.full_name} ({e})")


def metadata_value(context: grpc.aio.ServicerContext, key: str) -> str | bytes | None:
    return next((v for k, v in context.invocation_metadata() or () if k == key), None)


def handled(service: str, method: str):
    """Wrap a unary RPC: the token check, the request parsed, a ServingError as its status, message and trailing
    metadata, observe() once."""
    path = f"/{service}/{method}"
    request_type, _ = message_types(service, method)
    scope = scope_of(method)

    def wrap(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def rpc(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            started, status = time.perf_counter(), grpc.StatusCode.OK
            try:
                try:
                    if scope is not None:
                        self.core.authorize(context, scope)
                        self.core.refuse_if_closing()
                    return await fn(self, parsed(request_type, request), context)
                except ServingError as e:
                    status = code(e)
                    await context.abort(status, str(e), e.headers)
                except asyncio.CancelledError:
                    status = grpc.StatusCode.CANCELLED  # the client went away, or its own deadline passed
                    raise
                except Exception:
                    status = grpc.StatusCode.INTERNAL
                    log.exception("gRPC %s failed", path)
                    await context.abort(status, "the server failed to answer (a bug; its log has the details)")
            finally:
                self.core.observe(path, status, time.perf_counter() - started, context.peer())

        rpc.__name__ = fn.__name__
        return rpc
    return wrap


# --------------------------------------------------------------------------------------------- the request


def parameter_value(p: Any) -> bool | int | str | bytes | None:
    """The value of an InferParameter (or ModelRepositoryParameter), None when it holds none."""
    kind = p.WhichOneof("parameter_choice")
    return None if kind is None else getattr(p, kind)


def parameters(entries: Any, where: str) -> dict:
    """A protobuf parameter map as {name: value}; a value this protocol does not define is left out unless the server
    reads or refuses that parameter (then refused)."""
    found = {}
    for name, p in entries.items():
        value = parameter_value(p)
        if value is None and name in ACTED_ON:
            fail(f"{where}.parameters.{name}: a parameter must be a string, a number or a boolean")
        if value is not None:
            found[name] = value
    return found


class RawInput(InferInput):
    """An input whose values are raw little-endian bytes (raw_input_contents), read without a copy."""

    def __init__(self, t: Any, i: int, raw: bytes):
        super().__init__(t.name, t.datatype, t.shape, f"raw_input_contents[{i}]")
        self.raw = raw

    def as_numpy(self) -> np.ndarray:
        expected = math.prod(self.shape) * ITEMSIZE[self.datatype]
        if len(self.raw) != expected:
            fail(f"{self.where}: {len(self.raw)} bytes, but shape {list(self.shape)} of {self.datatype} is "
                 f"{expected} bytes")
        return np.frombuffer(self.raw, dtype=LITTLE_ENDIAN[self.datatype])


class ContentsInput(InferInput):
    """An input whose values are in its `contents`, in the field named `field` (None: none filled)."""

    def __init__(self, t: Any, i: int, field: str | None, misplaced: str | None):
        where = f"inputs[{i}].contents" + (f".{field}" if field else "")
        super().__init__(t.name, t.datatype, t.shape, where)
        self.values = getattr(t.contents, field) if field else ()
        self.misplaced = misplaced

    def as_numpy(self) -> np.ndarray:
        total = math.prod(self.shape)
        if len(self.values) != total:
            fail(f"{self.where}: {len(self.values)} values, but shape {list(self.shape)} needs {total}")
        return np.array(self.values, dtype=np.float64)

    def refusal(self) -> str | None:
        return self.misplaced


def infer_request(request: pb.ModelInferRequest, key: str | None) -> InferRequest:
    """The neutral request of a ModelInferRequest."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        fail(f"raw_input_contents has {len(raw)} entries, but inputs has {len(request.inputs)}; "
             "send one per input, in the order of inputs")
    inputs: list[InferInput] = []
    for i, t in enumerate(request.inputs):
        where = f"inputs[{i}]"
        params = parameters(t.parameters, where)
        size = parameter(params, BINARY_SIZE, where)  # KServe's client sends it beside raw_input_contents
        if size is not None and not raw:
            fail(f"{where}.parameters.{BINARY_SIZE} is set, but the request has no raw_input_contents; send the "
                 "values there, or in contents without it")
        if size is not None and size != len(raw[i]):
            fail(f"{where}.parameters.{BINARY_SIZE} is {size}, but raw_input_contents[{i}] has {len(raw[i])} bytes")
        filled = [field.name for field, _ in t.contents.ListFields()]
        if raw:
            if filled:
                fail(f"{where}.contents.{filled[0]} is set, but the request has raw_input_contents; "
                     "send each input's values in one of them")
            inputs.append(RawInput(t, i, raw[i]))
            continue
        if len(filled) > 1:
            fail(f"{where}.contents: values in {' and '.join(filled)}; send them in one field, its datatype's")
        field = f"{t.datatype.lower()}_contents" if t.datatype in ITEMSIZE else None
        misplaced = None
        if field and filled and filled[0] != field:
            misplaced = f"{where}.contents.{filled[0]}: the values of a {t.datatype} tensor go in contents.{field}"
        inputs.append(ContentsInput(t, i, filled[0] if filled else field, misplaced))
    request_params = parameters(request.parameters, "request")
    binary = parameter(request_params, BINARY_RESPONSE, "request")
    outputs = None
    if request.outputs:
        outputs = [RequestedOutput(o.name, parameter(parameters(o.parameters, f"outputs[{i}]"), BINARY_OUTPUT,
                                                     f"outputs[{i}]"))
                   for i, o in enumerate(request.outputs)]
    key = key.decode("latin-1") if isinstance(key, bytes) else key
    return InferRequest(request.model_name, request.model_version or None, inputs, outputs, request.id or None,
                        bool(raw) if binary is None else binary, key)


def answer(response: InferResponse) -> pb.ModelInferResponse:
    """The ModelInferResponse: every output raw when one is asked raw (the protocol does not mix), else typed."""
    out = pb.ModelInferResponse(model_name=response.model, model_version=response.version, id=response.id or "")
    as_raw = any(o.binary for o in response.outputs)
    for o in response.outputs:
        tensor = out.outputs.add(name=o.name, datatype=o.datatype, shape=list(o.array.shape))
        if as_raw:
            out.raw_output_contents.append(o.little_endian_bytes())
        else:
            getattr(tensor.contents, f"{o.datatype.lower()}_contents").extend(o.array.ravel().tolist())
    return out


def repository_parameters(entries: Any) -> dict[str, Any]:
    return {name: parameter_value(p) for name, p in entries.items()}


# --------------------------------------------------------------------------------------------- servicers


@dataclasses.dataclass
class Core:
    """What both servicers share: the worker's data plane, repository, admission, access, drain, deadline and
    observer."""

    plane: DataPlane
    admission: Admission
    access: Access
    drain: Any  # service.lifecycle.Drain
    deadline_s: float
    observe: Observe
    repository: Any = None  # service.repository.Repository, None: no model changes

    def ready(self) -> bool:
        return not self.drain.draining and self.plane.server_ready()

    def refuse_if_closing(self) -> None:
        """Once the drain is over, calls still coming are answered UNAVAILABLE (retry elsewhere) rather than left queued
        in grpcio, whose stop cancels what it holds."""
        if self.drain.closing:
            fail("the server is stopping (its drain is over); send the call to another replica", Kind.UNAVAILABLE)

    def authorize(self, context: grpc.aio.ServicerContext, scope: str) -> None:
        if not self.access.needed(scope):
            return
        value = metadata_value(context, "authorization")
        if isinstance(value, str):
            value = value.encode("latin-1", "replace")
        self.access.check(value, scope)

    def changes(self) -> Any:
        if self.repository is None:
            fail("this server has no model repository", Kind.UNAVAILABLE)
        return self.repository


class Inference(pb_grpc.GRPCInferenceServiceServicer):
    """GRPCInferenceService: the v2 protocol's RPCs (the module's docstring)."""

    def __init__(self, core: Core):
        self.core = core

    @handled(SERVICE, "ServerLive")
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @handled(SERVICE, "ServerReady")
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.core.ready())

    @handled(SERVICE, "ModelReady")
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.core.plane.model_ready(request.name, request.version or None))

    @handled(SERVICE, "ServerMetadata")
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**self.core.plane.server_metadata())

    @handled(SERVICE, "ModelMetadata")
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        meta = self.core.plane.model_metadata(request.name, request.version or None)
        return pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta["outputs"]])

    @handled(SERVICE, "ModelInfer")
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        core = self.core
        ticket = core.admission.enter(request.ByteSize(), core.deadline_s)
        try:
            async with core.admission.place(ticket):
                core.plane.route(request.model_name)  # 404 / 503 before the tensors are read
                neutral = infer_request(request, metadata_value(context, ROUTING_KEY))
                return answer(await core.plane.infer(neutral))
        finally:
            core.admission.release(ticket)

    @handled(SERVICE, "RepositoryIndex")
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> pb.RepositoryIndexResponse:
        entries = self.core.changes().index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**e) for e in entries])

    @handled(SERVICE, "RepositoryModelLoad")
    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest,
                                  context: Any) -> pb.RepositoryModelLoadResponse:
        await self.core.changes().load(request.model_name, repository_parameters(request.parameters))
        return pb.RepositoryModelLoadResponse()

    @handled(SERVICE, "RepositoryModelUnload")
    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest,
                                    context: Any) -> pb.RepositoryModelUnloadResponse:
        await self.core.changes().unload(request.model_name, repository_parameters(request.parameters))
        return pb.RepositoryModelUnloadResponse()


class Health(health_pb2_grpc.HealthServicer):
    """grpc.health.v1.Health: SERVING while ServerReady would answer true, NOT_SERVING otherwise (draining, not loaded)."""

    SERVICES = ("", SERVICE)

    def __init__(self, core: Core):
        self.core = core

    def status(self, service: str) -> int:
        if service not in self.SERVICES:
            return health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        return health_pb2.HealthCheckResponse.SERVING if self.core.ready() else health_pb2.HealthCheckResponse.NOT_SERVING

    @handled(HEALTH, "Check")
    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> health_pb2.HealthCheckResponse:
        if request.service not in self.SERVICES:
            fail(f"no service named {request.service[:60]!r}; this server has {SERVICE!r} (and '' for the server)",
                 Kind.NOT_FOUND)
        return health_pb2.HealthCheckResponse(status=self.status(request.service))

    @handled(HEALTH, "List")
    async def List(self, request: health_pb2.HealthListRequest, context: Any) -> health_pb2.HealthListResponse:
        response = health_pb2.HealthListResponse()
        for service in self.SERVICES:
            response.statuses[service].status = self.status(service)
        return response

    async def Watch(self, request: health_pb2.HealthCheckRequest,
                    context: Any) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        """The status now, then each change (read every WATCH_POLL_S) until the client goes or the server stops."""
        started, status, last = time.perf_counter(), grpc.StatusCode.OK, None
        try:
            try:
                request = parsed(health_pb2.HealthCheckRequest, request)
            except ServingError as e:
                status = code(e)
                await context.abort(status, str(e))
            while True:
                now = self.status(request.service)
                if now != last:
                    yield health_pb2.HealthCheckResponse(status=now)
                    last = now
                await asyncio.sleep(WATCH_POLL_S)
        except asyncio.CancelledError:
            status = grpc.StatusCode.CANCELLED
            raise
        finally:
            self.core.observe(f"/{HEALTH}/Watch", status, time.perf_counter() - started, context.peer())


# --------------------------------------------------------------------------------------------- the server


@dataclasses.dataclass
class GrpcServer:
    """A started gRPC server: the port it listens on, and stop(grace)."""

    server: grpc.aio.Server
    port: int

    async def stop(self, grace: float | None) -> None:
        """Refuse new RPCs; those in flight get `grace` seconds (None: all the time they take), then are cancelled."""
        await self.server.stop(grace)


def register(server: grpc.aio.Server, service: str, servicer: Any) -> None:
    """`servicer`'s methods as `service`'s RPCs, each given its request's bytes (parsed() makes the message), as the
    generated add_*_to_server would register them but for the deserializer."""
    handlers = {}
    for m in DESCRIPTORS[service].methods:
        _, response_type = message_types(service, m.name)
        make = grpc.unary_stream_rpc_method_handler if m.server_streaming else grpc.unary_unary_rpc_method_handler
        handlers[m.name] = make(getattr(servicer, m.name), request_deserializer=None,
                                response_serializer=response_type.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))


def options(max_message_bytes: int) -> list[tuple[str, Any]]:
    """The server's gRPC channel options: several worker processes bind one port; messages up to max_message_bytes.

    No ``grpc.max_connection_age_ms``: the periodic GOAWAY it sends broke calls in flight through HAProxy 2.6's
    HTTP/2 backend connections (UNKNOWN, REFUSED_STREAM in harness.rollout); a load balancer that routes each call
    (HAProxy, Envoy) moves calls off a draining replica without it."""
    return [("grpc.so_reuseport", 1), ("grpc.max_receive_message_length", max_message_bytes)]


async def start(core: Core, host: str, port: int, max_message_bytes: int) -> GrpcServer:
    """Serve both services on host:port (0: a free port) on the running event loop."""
    server = grpc.aio.server(options=options(max_message_bytes))
    register(server, SERVICE, Inference(core))
    register(server, HEALTH, Health(core))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    await server.start()
    return GrpcServer(server, bound)


# --------------------------------------------------------------------------------------------- in a worker

handled_total = prometheus_client.Counter(
    "grpc_server_handled_total", "gRPC calls answered, by method and status code", ["grpc_method", "grpc_code"])
handling_seconds = prometheus_client.Histogram(
    "grpc_server_handling_seconds", "Seconds from a gRPC call's arrival to its answer", ["grpc_method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


_series: dict[tuple[str, grpc.StatusCode], tuple[Any, Any]] = {}  # (method, code) -> its two labelled children


def count(method: str, status: grpc.StatusCode, seconds: float, peer: str) -> None:
    """Count one call in /metrics (grpc_server_handled_total, grpc_server_handling_seconds)."""
    series = _series.get((method, status))
    if series is None:  # labels() per call costs as much as the rest of this: once per method and code
        series = _series[(method, status)] = (handled_total.labels(grpc_method=method, grpc_code=status.name),
                                              handling_seconds.labels(grpc_method=method))
    series[0].inc()
    series[1].observe(seconds)


def record(method: str, status: grpc.StatusCode, seconds: float, peer: str) -> None:
    """Count one call in /metrics and write its access-log line, as BentoML does for an HTTP answer."""
    count(method, status, seconds, peer)
    access_log.write(access_log.grpc_client(peer), ["scheme=grpc", "method=POST", f"path={method}"],
                     [f"status={status.name}"], seconds)


@dataclasses.dataclass
class Beside:
    """The gRPC server a worker runs beside its HTTP one (service/upstream/server.py starts it once HTTP serves, on the
    HTTP listener's host, and stops it when HTTP stops accepting); `core()` gives the worker's Core once it exists."""

    port: int
    core: Callable[[], Core]
    max_message_bytes: int
    server: GrpcServer | None = None

    async def start(self, host: str) -> None:
        self.server = await start(self.core(), host, self.port, self.max_message_bytes)
        if not self.server.port:
            raise OSError(f"SERVICE_GRPC_PORT={self.port}: gRPC could not bind {host}:{self.port}")
        log.info("gRPC (Open Inference Protocol v2, grpc.health.v1) on %s:%d", host, self.server.port)

    async def stop(self, forced: bool) -> None:
        """Once the drain is over (drain.closing): calls still coming are answered UNAVAILABLE for CLOSING_S, so that
        grpcio hands over the ones it holds (its stop cancels them); then new calls are refused and those in flight get
        the deadline (none when `forced`)."""
        if self.server is None:
            return
        if not forced:
            await asyncio.sleep(CLOSING_S)
        await self.server.stop(0 if forced else self.core().deadline_s)
