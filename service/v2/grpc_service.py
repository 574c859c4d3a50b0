"""The Open Inference Protocol v2 over gRPC on a worker's event loop: GRPCInferenceService (service/v2/proto/) and grpc.health.v1.Health, with the HTTP routes' models, checks, messages, admission, tokens and drain (``await start(...)``).

What each RPC answers::

    ServerLive      live: true
    ServerReady     ready: the models are loaded and the worker is not draining (service.lifecycle.Drain)
    ModelReady      ready: true; NOT_FOUND for a model or version that is not served, UNAVAILABLE until loaded
    ServerMetadata  name, version, extensions (as GET /v2)
    ModelMetadata   as GET /v2/models/{name}[/versions/{version}] (service/v2/routes.py's model_metadata)
    ModelInfer      as POST /v2/models/{name}[/versions/{version}]/infer
    grpc.health.v1.Health  Check, Watch and List of "" and "inference.GRPCInferenceService": SERVING, or
                    NOT_SERVING while ServerReady would say false; any other service: NOT_FOUND (Check)

ModelInfer builds the HTTP route's request object (service/v2/schemas.py's V2InferRequest) from the protobuf and
runs service/v2/tensors.py's checks on it, so limits and messages are the HTTP ones; only where a value lies
differs. An input's values come in ``contents`` (the field of its datatype: fp32_contents or fp64_contents) or in
``raw_input_contents`` (one entry per input, raw little-endian bytes, exactly shape x datatype), never both.
Outputs come back in ``raw_output_contents`` when the inputs came raw (tritonclient.grpc and KServe's client by
default: tritonclient reads raw outputs only, KServe's client either) or when ``binary_data_output`` (request) or
``binary_data`` (an output) is true, and in ``contents`` otherwise; the protocol cannot mix the two in one answer,
so one output asked raw makes them all raw. Parameters are the HTTP ones (classification and shared memory
refused, the rest ignored); a value outside the protocol's bool, int64 and string (tritonclient.grpc sends
``priority`` as Triton's uint64_param) is ignored like any parameter this server does not read, and refused
for one it reads. ``binary_data_size``, which KServe's client sends beside each raw input, must be that
input's raw byte count.

Every refusal carries HTTP's one-sentence message, its status from V2Error.status (``CODES``): 400
INVALID_ARGUMENT, 401 UNAUTHENTICATED (every RPC but ServerLive, ServerReady and Health needs
``authorization: Bearer <token>`` metadata when tokens are configured; trailing ``www-authenticate``), 404
NOT_FOUND, 413 and 429 RESOURCE_EXHAUSTED (429 with trailing ``retry-after: 1``: admission, as HTTP, sized by
the message's bytes), 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED (not answered within ``deadline_s`` of arrival, as
the HTTP guard's). A message over Settings.max_body_bytes is refused by gRPC itself (RESOURCE_EXHAUSTED) before
the servicer sees it. Only a bug answers INTERNAL. ``observe(method, code, seconds, peer)`` is called once per RPC
the servicer handles; ``record`` (what a worker's ``Beside`` uses) counts it in /metrics
(``grpc_server_handled_total``, ``grpc_server_handling_seconds``) and writes it to BentoML's access log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any, AsyncIterator, Awaitable, Callable

import bentoml
import grpc
import numpy as np
from google.protobuf import json_format, message_factory
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.v2 import routes, schemas as s
from service.v2.proto import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc as pb_grpc
from service.v2.tensors import V2Error, fail, input_array, requested_outputs, validate

log = logging.getLogger("bentoml.service.thermodigits")
access_log = logging.getLogger("bentoml.access")  # BentoML's access log: its format and handlers

DESCRIPTORS = {d.full_name: d for d in (pb.DESCRIPTOR.services_by_name["GRPCInferenceService"],
                                        health_pb2.DESCRIPTOR.services_by_name["Health"])}
SERVICE, HEALTH = DESCRIPTORS  # inference.GRPCInferenceService, grpc.health.v1.Health
CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED, 404: grpc.StatusCode.NOT_FOUND,
         413: grpc.StatusCode.RESOURCE_EXHAUSTED, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
         503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED}
RETRY_AFTER = (("retry-after", "1"),)
WATCH_POLL_S = 0.5  # Health.Watch re-reads the status this often (Drain.begin() only sets a number)
CLOSING_S = 0.1  # once the drain is over, calls are answered UNAVAILABLE this long before grpcio stops

Observe = Callable[[str, grpc.StatusCode, float, str], None]  # method, code, seconds, peer


class Refused(V2Error):
    """A V2Error with trailing metadata for the client (retry-after, www-authenticate)."""

    def __init__(self, message: str, status: int, metadata: tuple[tuple[str, str], ...] = ()):
        super().__init__(message, status)
        self.metadata = metadata


def code(status: int) -> grpc.StatusCode:
    """The gRPC status of an HTTP status (a 4xx not in CODES is a client's mistake too: INVALID_ARGUMENT)."""
    return CODES.get(status, grpc.StatusCode.INVALID_ARGUMENT if 400 <= status < 500 else grpc.StatusCode.INTERNAL)


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


def handled(service: str, method: str, needs_token: bool = True):
    """Wrap a unary RPC: the token check, the request parsed, V2Error as its status and message, observe() once."""
    path = f"/{service}/{method}"
    request_type, _ = message_types(service, method)

    def wrap(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def rpc(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            started, status = time.perf_counter(), grpc.StatusCode.OK
            try:
                try:
                    if needs_token:
                        self.core.authorize(context)
                        self.core.refuse_if_closing()
                    return await fn(self, parsed(request_type, request), context)
                except V2Error as e:
                    status = code(e.status)
                    await context.abort(status, str(e), getattr(e, "metadata", ()))
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


def parameter_value(p: pb.InferParameter) -> bool | int | str | None:
    """The value of an InferParameter, None when it holds none this protocol defines."""
    kind = p.WhichOneof("parameter_choice")
    return None if kind is None else getattr(p, kind)


def parameters(entries: Any) -> dict | None:
    """A protobuf parameter map as the JSON request's `parameters` (None when empty); an unreadable value is left
    out unless the server reads or refuses that parameter (then validation refuses it)."""
    found = {}
    for name, p in entries.items():
        value = parameter_value(p)
        if value is not None or name in s.ACTED_ON:
            found[name] = value
    return found or None


def to_v2(request: pb.ModelInferRequest) -> tuple[s.V2InferRequest, bytes | None, str | None, str | None]:
    """(the HTTP route's request, the first input's raw bytes or None, where its values are for messages, and a
    refusal to make once the input's name, datatype and shape have passed: values in another datatype's field)."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        fail(f"raw_input_contents has {len(raw)} entries, but inputs has {len(request.inputs)}; "
             "send one per input, in the order of inputs")
    inputs, values, misplaced = [], None, None
    for i, t in enumerate(request.inputs):
        where = f"inputs[{i}]"
        entry: dict[str, Any] = {"name": t.name, "shape": list(t.shape), "datatype": t.datatype}
        params = parameters(t.parameters)
        size = (params or {}).get(s.BINARY_SIZE)  # KServe's client sends it beside raw_input_contents
        if size is not None and not raw:
            fail(f"{where}.parameters.{s.BINARY_SIZE} is set, but the request has no raw_input_contents; send the "
                 "values there, or in contents without it")
        if type(size) is int and size != len(raw[i]):
            fail(f"{where}.parameters.{s.BINARY_SIZE} is {size}, but raw_input_contents[{i}] has {len(raw[i])} bytes")
        if params:
            entry["parameters"] = params
        filled = [field.name for field, _ in t.contents.ListFields()]
        if raw:
            if filled:
                fail(f"{where}.contents.{filled[0]} is set, but the request has raw_input_contents; "
                     "send each input's values in one of them")
            where_values = f"raw_input_contents[{i}]"
        else:
            field = f"{t.datatype.lower()}_contents" if t.datatype in s.ITEMSIZE else None
            if len(filled) > 1:
                fail(f"{where}.contents: values in {' and '.join(filled)}; send them in one field, its datatype's")
            if field and filled and filled[0] != field:
                misplaced = misplaced or (f"{where}.contents.{filled[0]}: the values of a {t.datatype} tensor go "
                                          f"in contents.{field}")
            name = filled[0] if filled else field
            entry["data"] = list(getattr(t.contents, name)) if name else []
            where_values = f"{where}.contents.{name}" if name else f"{where}.contents"
        values = values or where_values
        inputs.append(entry)
    body: dict[str, Any] = {"inputs": inputs}
    if request.id:
        body["id"] = request.id
    if params := parameters(request.parameters):
        body["parameters"] = params
    outputs = []
    for o in request.outputs:
        entry = {"name": o.name}
        if params := parameters(o.parameters):
            entry["parameters"] = params
        outputs.append(entry)
    if outputs:
        body["outputs"] = outputs
    if raw and s.BINARY_RESPONSE not in (body.get("parameters") or {}):
        body.setdefault("parameters", {})[s.BINARY_RESPONSE] = True  # raw in, raw out
    return validate(body), (raw[0] if raw else None), values, misplaced


def answer(m: Any, request_id: str, results: list[tuple[dict, bool, np.ndarray]]) -> pb.ModelInferResponse:
    """The ModelInferResponse: every output raw when one is asked raw (the protocol does not mix), else typed."""
    response = pb.ModelInferResponse(model_name=m.name, model_version=m.version, id=request_id)
    as_raw = any(binary for _, binary, _ in results)
    for spec, _, y in results:
        datatype = s.DATATYPES[spec["dtype"]]
        out = response.outputs.add(name=spec["name"], datatype=datatype, shape=list(y.shape))
        if as_raw:
            response.raw_output_contents.append(y.astype(y.dtype.newbyteorder("<"), copy=False).tobytes())
        else:
            getattr(out.contents, f"{datatype.lower()}_contents").extend(y.ravel().tolist())
    return response


# --------------------------------------------------------------------------------------------- servicers


@dataclasses.dataclass
class Core:
    """What both servicers share: the worker's models, admission, tokens, drain, deadline and observer."""

    models: Callable[[], Any]  # the worker's Models, or None until loaded
    admission: Any  # service.api.admission.Admission
    tokens: Any  # service.api.auth.Tokens, or None: no token needed
    drain: Any  # service.lifecycle.Drain
    deadline_s: float
    observe: Observe

    def loaded(self) -> Any:
        return routes.require_loaded(self.models())

    def ready(self) -> bool:
        return not self.drain.draining and hasattr(self.models(), "predict")

    def refuse_if_closing(self) -> None:
        """Once the drain is over, calls still coming are answered UNAVAILABLE (retry elsewhere) rather than left queued
        in grpcio, whose stop cancels what it holds."""
        if self.drain.closing:
            fail("the server is stopping (its drain is over); send the call to another replica", 503)

    def authorize(self, context: grpc.aio.ServicerContext) -> None:
        if self.tokens is None:
            return
        value = next((v for k, v in context.invocation_metadata() or () if k == "authorization"), None)
        if isinstance(value, str):
            value = value.encode("latin-1", "replace")
        refusal = self.tokens.refusal(value)
        if refusal is not None:
            raise Refused(refusal.message, 401, (("www-authenticate", refusal.challenge),))


class Inference(pb_grpc.GRPCInferenceServiceServicer):
    """GRPCInferenceService: the v2 protocol's RPCs (the module's docstring)."""

    def __init__(self, core: Core):
        self.core = core

    @handled(SERVICE, "ServerLive", needs_token=False)
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @handled(SERVICE, "ServerReady", needs_token=False)
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.core.ready())

    @handled(SERVICE, "ModelReady")
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        routes.find(self.core.loaded(), request.name, request.version or None)
        return pb.ModelReadyResponse(ready=True)

    @handled(SERVICE, "ServerMetadata")
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=routes.NAME, version=routes.VERSION, extensions=routes.EXTENSIONS)

    @handled(SERVICE, "ModelMetadata")
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        m = routes.find(self.core.loaded(), request.name, request.version or None)
        return json_format.ParseDict(routes.model_metadata(m), pb.ModelMetadataResponse())

    @handled(SERVICE, "ModelInfer")
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        admission = self.core.admission
        size = request.ByteSize()
        refusal = admission.refusal(size)
        if refusal:
            raise Refused(refusal, 429, RETRY_AFTER)
        ticket = admission.admit(size)
        served = False
        try:
            async with asyncio.timeout(self.core.deadline_s):
                await admission.serve(ticket)
                served = True
                return await self.infer(request)
        except TimeoutError:
            fail(f"the request was not answered within {self.core.deadline_s:g} s", 504)
        finally:
            admission.finish(ticket, served)

    async def infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        models = self.core.loaded()
        m = routes.find(models, request.model_name, request.model_version or None)
        body, raw, values, misplaced = to_v2(request)
        outputs = requested_outputs(m, body)
        x = input_array(m, body, None, raw=raw, values=values)
        if misplaced:
            fail(misplaced)
        y = np.asarray(await models.predict(m.name, x))  # each model has one output
        return answer(m, request.id, [(spec, binary, y.astype(spec["dtype"], copy=False)) for spec, binary in outputs])


class Health(health_pb2_grpc.HealthServicer):
    """grpc.health.v1.Health: SERVING while ServerReady would answer true, NOT_SERVING otherwise (draining, not loaded)."""

    SERVICES = ("", SERVICE)

    def __init__(self, core: Core):
        self.core = core

    def status(self, service: str) -> int:
        if service not in self.SERVICES:
            return health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        return health_pb2.HealthCheckResponse.SERVING if self.core.ready() else health_pb2.HealthCheckResponse.NOT_SERVING

    @handled(HEALTH, "Check", needs_token=False)
    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> health_pb2.HealthCheckResponse:
        if request.service not in self.SERVICES:
            fail(f"no service named {request.service[:60]!r}; this server has {SERVICE!r} (and '' for the server)", 404)
        return health_pb2.HealthCheckResponse(status=self.status(request.service))

    @handled(HEALTH, "List", needs_token=False)
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
            except V2Error as e:
                status = code(e.status)
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


def options(settings: Any) -> list[tuple[str, Any]]:
    """The server's gRPC channel options: several worker processes bind one port; messages up to max_body_bytes.

    No ``grpc.max_connection_age_ms``: the periodic GOAWAY it sends broke calls in flight through HAProxy 2.6's
    HTTP/2 backend connections (UNKNOWN, REFUSED_STREAM in harness.rollout); a load balancer that routes each call
    (HAProxy, Envoy) moves calls off a draining replica without it."""
    return [("grpc.so_reuseport", 1), ("grpc.max_receive_message_length", settings.max_body_bytes)]


async def start(models: Any, admission: Any, tokens: Any, drain: Any, settings: Any, host: str, port: int,
                observe: Observe, deadline_s: float) -> GrpcServer:
    """Serve both services on host:port (0: a free port) on the running event loop.

    `models`: the worker's service.inference.models.Models, or a callable returning it (None until loaded).
    `admission`, `tokens` (None: no token needed), `drain`, `settings`: the worker's, as HTTP has them.
    `observe(method, code, seconds, peer)`: called once per RPC. `deadline_s`: as the HTTP guard's (traffic.timeout).
    """
    get_models = models if callable(models) and not hasattr(models, "predict") else (lambda: models)
    core = Core(get_models, admission, tokens, drain, deadline_s, observe)
    server = grpc.aio.server(options=options(settings))
    register(server, SERVICE, Inference(core))
    register(server, HEALTH, Health(core))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    await server.start()
    return GrpcServer(server, bound)


# --------------------------------------------------------------------------------------------- in a worker

handled_total = bentoml.metrics.Counter(
    name="grpc_server_handled_total", documentation="gRPC calls answered, by method and status code",
    labelnames=["grpc_method", "grpc_code"])
handling_seconds = bentoml.metrics.Histogram(
    name="grpc_server_handling_seconds", documentation="Seconds from a gRPC call's arrival to its answer",
    labelnames=["grpc_method"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


def record(method: str, status: grpc.StatusCode, seconds: float, peer: str) -> None:
    """Count one call in /metrics and write its access-log line, as BentoML does for an HTTP answer."""
    handled_total.labels(grpc_method=method, grpc_code=status.name).inc()
    handling_seconds.labels(grpc_method=method).observe(seconds)
    client = peer.split(":", 1)[1] if peer.startswith(("ipv4:", "ipv6:")) else peer or "_"
    access_log.info("%s (scheme=grpc,method=POST,path=%s) (status=%s) %.3fms", client, method, status.name,
                    seconds * 1000)


@dataclasses.dataclass
class Beside:
    """The gRPC server a worker runs beside its HTTP one (service/upstream/server.py starts it once HTTP serves, on the
    HTTP listener's host, and stops it when HTTP stops accepting): `port`, and the worker's own admission, tokens,
    drain and settings; `models` returns the worker's loaded models (None before)."""

    port: int
    admission: Any
    tokens: Any
    drain: Any
    settings: Any
    deadline_s: float
    models: Callable[[], Any]
    server: GrpcServer | None = None

    async def start(self, host: str) -> None:
        self.server = await start(self.models, self.admission, self.tokens, self.drain, self.settings, host, self.port,
                                  record, self.deadline_s)
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
        await self.server.stop(0 if forced else self.deadline_s)
