"""The v2 gRPC servicer (service/v2/grpc_service.py) started in this process with the committed models, driven through this project's generated stubs: answers, refusals and their statuses, tokens, admission, deadline, drain and health."""

import math

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import artifacts
import artifacts.serving
from service.core import plane as data_plane
from service.core.admission import Admission
from service.core.auth import Access, Tokens
from service.lifecycle import Drain
from service.settings import Settings
from service.v2.grpc_service import HEALTH, SERVICE
from service.v2.proto import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc as pb_grpc
from testkit.grpc_servicer import EventLoop, committed_plane, running

LINEAR, MLP, MNIST = artifacts.TEMPERATURE_LINEAR, artifacts.TEMPERATURE_MLP, artifacts.MNIST
VERSION = {name: artifacts.read_metadata(artifacts.serving.default_dir(name))["version"] for name in artifacts.MODEL_NAMES}
READINGS = [-1000.0, 21.8, 35.7, 55.9, 81.9, 1000.0]
TOKEN = "test-token-0123456789abcdef"
Code = grpc.StatusCode


@pytest.fixture(scope="module")
def loop():
    loop = EventLoop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def models():
    return committed_plane()


@pytest.fixture(scope="module")
def server(loop, models):
    with running(loop, models) as state:
        yield state


class Client:
    """This project's stubs on one channel to a started server."""

    def __init__(self, target: str):
        self.channel = grpc.insecure_channel(target)
        self.inference = pb_grpc.GRPCInferenceServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def infer(self, request: pb.ModelInferRequest, **kwargs) -> pb.ModelInferResponse:
        return self.inference.ModelInfer(request, timeout=30, **kwargs)

    def refusal(self, call, request, **kwargs) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as e:
            call(request, timeout=30, **kwargs)
        return e.value


@pytest.fixture(scope="module")
def stub(server):
    c = Client(server.target)
    yield c
    c.channel.close()


def readings_request(values=READINGS, model=LINEAR, raw=False, **fields) -> pb.ModelInferRequest:
    r = pb.ModelInferRequest(model_name=model, **fields)
    t = r.inputs.add(name="readings", datatype="FP64", shape=[len(values), 1])
    if raw:
        r.raw_input_contents.append(np.asarray(values, "<f8").tobytes())
    else:
        t.contents.fp64_contents.extend(values)
    return r


def images_request(images: np.ndarray, model=MNIST, raw=True) -> pb.ModelInferRequest:
    r = pb.ModelInferRequest(model_name=model)
    t = r.inputs.add(name="images", datatype="FP32", shape=list(images.shape))
    if raw:
        r.raw_input_contents.append(images.astype("<f4").tobytes())
    else:
        t.contents.fp32_contents.extend(images.ravel().tolist())
    return r


def output(response: pb.ModelInferResponse) -> tuple[np.ndarray, bool]:
    """The one output as an array, and whether it came in raw_output_contents."""
    out = response.outputs[0]
    dtype = {"FP32": "<f4", "FP64": "<f8"}[out.datatype]
    if response.raw_output_contents:
        return np.frombuffer(response.raw_output_contents[0], dtype).reshape(out.shape), True
    values = out.contents.fp32_contents if out.datatype == "FP32" else out.contents.fp64_contents
    return np.array(values, dtype).reshape(out.shape), False


def mnist(mnist_test_images, n: int) -> tuple[np.ndarray, np.ndarray]:
    raw, _ = mnist_test_images
    return raw[:n], (raw[:n].astype(np.float64) / 255).astype(np.float32).reshape(n, 1, 28, 28)


# --------------------------------------------------------------------------------------------- answers


def test_live_ready_and_metadata_are_the_http_ones(stub, client):
    assert stub.inference.ServerLive(pb.ServerLiveRequest()).live
    assert stub.inference.ServerReady(pb.ServerReadyRequest()).ready
    meta = stub.inference.ServerMetadata(pb.ServerMetadataRequest())
    assert (meta.name, meta.version, list(meta.extensions)) == tuple(client.get("/v2").json().values())
    for name in artifacts.MODEL_NAMES:
        for version in ("", VERSION[name]):
            assert stub.inference.ModelReady(pb.ModelReadyRequest(name=name, version=version)).ready
            got = stub.inference.ModelMetadata(pb.ModelMetadataRequest(name=name, version=version))
            http = client.get(f"/v2/models/{name}").json()
            assert (got.name, list(got.versions), got.platform) == (http["name"], http["versions"], http["platform"])
            assert [(t.name, t.datatype, list(t.shape)) for t in (*got.inputs, *got.outputs)] == \
                [(t["name"], t["datatype"], t["shape"]) for t in (*http["inputs"], *http["outputs"])]
    for call, request in ((stub.inference.ModelReady, pb.ModelReadyRequest(name="resnet")),
                          (stub.inference.ModelMetadata, pb.ModelMetadataRequest(name=MNIST, version="1"))):
        e = stub.refusal(call, request)
        assert e.code() == Code.NOT_FOUND
        assert e.details() in ("no model named 'resnet'; the models are mnist-fc, mnist-fc-distilled, "
                               "temperature-linear, temperature-mlp",
                               f"model 'mnist-fc' has no version '1' loaded; it serves {VERSION[MNIST]} (default)")


@pytest.mark.parametrize("raw", [False, True], ids=["contents", "raw"])
@pytest.mark.parametrize("name,short", [(LINEAR, "linear"), (MLP, "mlp")])
def test_temperatures_equal_the_typed_endpoint(stub, client, name, short, raw):
    typed = client.post("/temperature", json={"readings": READINGS, "model": short}).json()
    for version in ("", VERSION[name]):
        response = stub.infer(readings_request(model=name, raw=raw, model_version=version, id="t-1"))
        assert (response.model_name, response.model_version, response.id) == (name, typed["version"], "t-1")
        celsius, came_raw = output(response)
        assert came_raw == raw  # raw in, raw out; contents in, contents out
        assert (response.outputs[0].name, response.outputs[0].datatype) == ("celsius", "FP64")
        assert celsius.shape == (len(READINGS), 1) and celsius.ravel().tolist() == typed["celsius"]


@pytest.mark.parametrize("raw", [False, True], ids=["contents", "raw"])
@pytest.mark.parametrize("field,name", [(c, m.name) for c, m in artifacts.choices(artifacts.DIGITS).items()])
def test_digits_equal_the_typed_endpoint(stub, client, mnist_test_images, field, name, raw):
    pixels, images = mnist(mnist_test_images, 16)
    typed = np.array([p["probabilities"] for p in client.post("/digits", json={"images": pixels.tolist(),
                                                                              "model": field}).json()])
    response = stub.infer(images_request(images, model=name, raw=raw))
    probabilities, came_raw = output(response)
    assert came_raw == raw and response.outputs[0].datatype == "FP32" and probabilities.shape == (16, 10)
    np.testing.assert_allclose(probabilities, typed, rtol=0, atol=1e-6)  # batched with others: same up to rounding
    assert (probabilities.argmax(1) == typed.argmax(1)).all()


def test_outputs_raw_or_typed_as_asked(stub):
    expected = output(stub.infer(readings_request()))[0].tolist()
    as_raw = readings_request()  # contents in...
    as_raw.parameters["binary_data_output"].bool_param = True  # ...raw out, as asked
    typed = readings_request(raw=True)  # raw in...
    typed.outputs.add(name="celsius").parameters["binary_data"].bool_param = False  # ...contents out, as asked
    for request, want_raw in ((as_raw, True), (typed, False)):
        got, came_raw = output(stub.infer(request))
        assert (came_raw, got.tolist()) == (want_raw, expected)


def test_parameters_outside_the_protocol_are_ignored_unless_read(stub):
    """tritonclient.grpc sends `priority` as Triton's uint64_param, which this protocol's InferParameter lacks."""
    request = readings_request()
    request.parameters["priority"].CopyFrom(pb.InferParameter())  # no value this proto defines
    request.parameters["sequence_id"].int64_param = 7
    request.parameters["content_type"].string_param = "np"
    assert output(stub.infer(request))[0].ravel().tolist() == output(stub.infer(readings_request()))[0].ravel().tolist()


# --------------------------------------------------------------------------------------------- refusals


def edit(request: pb.ModelInferRequest, change) -> pb.ModelInferRequest:
    copy = pb.ModelInferRequest()
    copy.CopyFrom(request)
    change(copy)
    return copy


GOOD = readings_request(READINGS[:2])
RAW = readings_request(READINGS[:2], raw=True)
PIXELS = np.zeros((1, 1, 28, 28), np.float32)
PIXELS[0, 0, 0, 10] = 255


def set_parameter(params, name: str, **value) -> None:
    params[name].CopyFrom(pb.InferParameter(**value))


HOSTILE = {  # case: (request, status, fragment of the message)
    "raw bytes short": (edit(RAW, lambda r: r.raw_input_contents.__setitem__(0, b"\0" * 15)), Code.INVALID_ARGUMENT,
                        "raw_input_contents[0]: 15 bytes, but shape [2, 1] of FP64 is 16 bytes"),
    "raw bytes long": (edit(RAW, lambda r: r.raw_input_contents.__setitem__(0, b"\0" * 17)), Code.INVALID_ARGUMENT,
                       "raw_input_contents[0]: 17 bytes, but shape [2, 1] of FP64 is 16 bytes"),
    "raw entries more than inputs": (edit(RAW, lambda r: r.raw_input_contents.append(b"\0" * 16)),
                                     Code.INVALID_ARGUMENT, "raw_input_contents has 2 entries, but inputs has 1"),
    "raw and contents": (edit(RAW, lambda r: r.inputs[0].contents.fp64_contents.extend([1.0, 2.0])),
                         Code.INVALID_ARGUMENT,
                         "inputs[0].contents.fp64_contents is set, but the request has raw_input_contents"),
    "values fewer than shape": (edit(GOOD, lambda r: r.inputs[0].shape.__setitem__(0, 3)), Code.INVALID_ARGUMENT,
                                "inputs[0].contents.fp64_contents: 2 values, but shape [3, 1] needs 3"),
    "no values": (edit(GOOD, lambda r: r.inputs[0].ClearField("contents")), Code.INVALID_ARGUMENT,
                  "inputs[0].contents.fp64_contents: 0 values, but shape [2, 1] needs 2"),
    "values in another field": (edit(GOOD, lambda r: (r.inputs[0].ClearField("contents"),
                                                      r.inputs[0].contents.fp32_contents.extend([1.0, 2.0]))),
                                Code.INVALID_ARGUMENT,
                                "inputs[0].contents.fp32_contents: the values of a FP64 tensor go in "
                                "contents.fp64_contents"),
    "values in two fields": (edit(GOOD, lambda r: r.inputs[0].contents.int64_contents.extend([1, 2])),
                             Code.INVALID_ARGUMENT, "inputs[0].contents: values in int64_contents and fp64_contents"),
    "rank": (edit(GOOD, lambda r: r.inputs[0].shape.pop()), Code.INVALID_ARGUMENT,
             "inputs[0].shape: expected [-1, 1] (-1: the batch, 1 to 10,000), got [2]"),
    "NaN": (edit(GOOD, lambda r: r.inputs[0].contents.fp64_contents.__setitem__(1, math.nan)), Code.INVALID_ARGUMENT,
            "inputs[0].contents.fp64_contents[1]: expected a finite number, got NaN"),
    "infinity raw": (edit(RAW, lambda r: r.raw_input_contents.__setitem__(0, np.array([1, np.inf]).tobytes())),
                     Code.INVALID_ARGUMENT, "raw_input_contents[0][1]: expected a finite number, got Infinity"),
    "huge batch": (edit(GOOD, lambda r: r.inputs[0].shape.__setitem__(0, 2**62)), Code.INVALID_ARGUMENT,
                   "the batch (-1 in [-1, 1]) must be 1 to 10,000, got 4611686018427387904"),
    "huge image": (edit(images_request(PIXELS * 0), lambda r: r.inputs[0].shape.__setitem__(2, 2**40)),
                   Code.INVALID_ARGUMENT, "inputs[0].shape: expected [-1, 1, 28, 28]"),
    "negative batch": (edit(GOOD, lambda r: r.inputs[0].shape.__setitem__(0, -2)), Code.INVALID_ARGUMENT,
                       "must be 1 to 10,000, got -2"),
    "too many images": (edit(images_request(PIXELS * 0), lambda r: r.inputs[0].shape.__setitem__(0, 1025)),
                        Code.INVALID_ARGUMENT, "must be 1 to 1,024, got 1025"),
    "pixel 255": (images_request(PIXELS), Code.INVALID_ARGUMENT,
                  "raw_input_contents[0][10]: 255 is outside the model's input range [0, 1] (divide 0-255 pixel "
                  "values by 255)"),
    "unknown model": (edit(GOOD, lambda r: setattr(r, "model_name", "resnet")), Code.NOT_FOUND,
                      "no model named 'resnet'; the models are mnist-fc, mnist-fc-distilled, temperature-linear, "
                      "temperature-mlp"),
    "unknown version": (edit(GOOD, lambda r: setattr(r, "model_version", VERSION[MLP])), Code.NOT_FOUND,
                        f"model '{LINEAR}' has no version '{VERSION[MLP]}' loaded; it serves {VERSION[LINEAR]} "
                        "(default)"),
    "unknown input": (edit(GOOD, lambda r: setattr(r.inputs[0], "name", "images")), Code.INVALID_ARGUMENT,
                      "inputs[0].name: temperature-linear's input is 'readings', got 'images'"),
    "long input name": (edit(GOOD, lambda r: setattr(r.inputs[0], "name", "x" * 100_000)), Code.INVALID_ARGUMENT,
                        "got 'xxxxxxxx"),
    "wrong datatype": (edit(GOOD, lambda r: setattr(r.inputs[0], "datatype", "FP32")), Code.INVALID_ARGUMENT,
                       "inputs[0].datatype: temperature-linear's input 'readings' is FP64, got 'FP32'"),
    "BYTES datatype": (edit(GOOD, lambda r: (setattr(r.inputs[0], "datatype", "BYTES"),
                                             r.inputs[0].ClearField("contents"),
                                             r.inputs[0].contents.bytes_contents.extend([b"1", b"2"]))),
                       Code.INVALID_ARGUMENT, "is FP64, got 'BYTES'"),
    "two inputs": (edit(GOOD, lambda r: r.inputs.append(r.inputs[0])), Code.INVALID_ARGUMENT,
                   "inputs: temperature-linear takes exactly one input, 'readings' (FP64 [-1, 1]); got 2"),
    "no inputs": (pb.ModelInferRequest(model_name=LINEAR), Code.INVALID_ARGUMENT,
                  "inputs: temperature-linear takes exactly one input, 'readings' (FP64 [-1, 1]); got 0"),
    "unknown output": (edit(GOOD, lambda r: r.outputs.add(name="probabilities")), Code.INVALID_ARGUMENT,
                       "outputs[0].name: temperature-linear has no output 'probabilities'; its outputs: celsius"),
    "output twice": (edit(GOOD, lambda r: (r.outputs.add(name="celsius"), r.outputs.add(name="celsius"))),
                     Code.INVALID_ARGUMENT, "outputs[1].name: 'celsius' is asked for twice"),
    "classification": (edit(GOOD, lambda r: set_parameter(r.outputs.add(name="celsius").parameters, "classification",
                                                          int64_param=2)),
                       Code.INVALID_ARGUMENT, "outputs[0].parameters.classification: the classification extension"),
    "shared memory": (edit(GOOD, lambda r: set_parameter(r.inputs[0].parameters, "shared_memory_region",
                                                         string_param="r")),
                      Code.INVALID_ARGUMENT, "the shared-memory extensions is not supported"),
    "binary_data_size not the raw length": (edit(RAW, lambda r: set_parameter(r.inputs[0].parameters,
                                                                              "binary_data_size", int64_param=8)),
                                            Code.INVALID_ARGUMENT, "inputs[0].parameters.binary_data_size is 8, but "
                                                                   "raw_input_contents[0] has 16 bytes"),
    "binary_data_size without raw": (edit(GOOD, lambda r: set_parameter(r.inputs[0].parameters, "binary_data_size",
                                                                        int64_param=16)),
                                     Code.INVALID_ARGUMENT, "inputs[0].parameters.binary_data_size is set, but the "
                                                            "request has no raw_input_contents"),
    "binary_data_size not a number": (edit(RAW, lambda r: set_parameter(r.inputs[0].parameters, "binary_data_size",
                                                                         string_param="16")),
                                      Code.INVALID_ARGUMENT, "inputs[0].parameters.binary_data_size: expected a number "
                                                             "of bytes"),
    "binary_data_output not a boolean": (edit(GOOD, lambda r: set_parameter(r.parameters, "binary_data_output",
                                                                            string_param="yes")),
                                         Code.INVALID_ARGUMENT,
                                         "request.parameters.binary_data_output: expected true or false, got 'yes'"),
    "binary_data_output with no value": (edit(GOOD, lambda r: set_parameter(r.parameters, "binary_data_output")),
                                         Code.INVALID_ARGUMENT, "parameters.binary_data_output: a parameter must be"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_request_gets_its_status_and_the_next_good_one_succeeds(stub, case):
    request, status, fragment = HOSTILE[case]
    e = stub.refusal(stub.inference.ModelInfer, request)
    assert (e.code(), fragment in e.details()) == (status, True), e.details()
    assert len(e.details()) < 1000
    assert output(stub.infer(GOOD))[0].shape == (2, 1)


def test_message_over_max_body_bytes_is_resource_exhausted(loop, models, mnist_test_images):
    settings = Settings(max_body_bytes=64 * 1024)
    _, images = mnist(mnist_test_images, 32)  # 100,352 bytes of pixels
    with running(loop, models, settings) as server:
        c = Client(server.target)
        e = c.refusal(c.inference.ModelInfer, images_request(images))
        assert e.code() == Code.RESOURCE_EXHAUSTED and "65536" in e.details(), e.details()
        assert output(c.infer(images_request(images[:16])))[0].shape == (16, 10)
        c.channel.close()


def test_bearer_tokens_guard_all_but_liveness_readiness_and_health(loop, models):
    with running(loop, models, access=Access(Tokens([TOKEN]))) as server:
        c = Client(server.target)
        good = (("authorization", f"Bearer {TOKEN}"),)
        assert c.inference.ServerLive(pb.ServerLiveRequest()).live
        assert c.inference.ServerReady(pb.ServerReadyRequest()).ready
        assert c.health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
        for metadata, message in ((None, "this route needs a bearer token: send the header Authorization: Bearer"),
                                  ((("authorization", "Bearer wrong-token-0123456789"),), "the bearer token is not valid"),
                                  ((("authorization", f"Basic {TOKEN}"),), "Authorization must use the Bearer scheme")):
            for call, request in ((c.inference.ModelInfer, GOOD), (c.inference.ModelMetadata, pb.ModelMetadataRequest(name=LINEAR)),
                                  (c.inference.ServerMetadata, pb.ServerMetadataRequest()),
                                  (c.inference.ModelReady, pb.ModelReadyRequest(name=LINEAR))):
                e = c.refusal(call, request, metadata=metadata)
                assert e.code() == Code.UNAUTHENTICATED and message in e.details(), e.details()
                assert dict(e.trailing_metadata())["www-authenticate"].startswith('Bearer realm="thermo-digits"')
            assert output(c.infer(GOOD, metadata=good))[0].shape == (2, 1)
        assert c.inference.ModelMetadata(pb.ModelMetadataRequest(name=LINEAR), metadata=good).name == LINEAR
        c.channel.close()


def test_admission_refusal_is_resource_exhausted_with_retry_after(loop, models):
    admission = Admission(target=0, concurrency=4, max_requests=1, max_bytes=1 << 20)
    with running(loop, models, admission=admission) as server:
        c = Client(server.target)
        held = admission.admit(100)  # another request holds the only place
        e = c.refusal(c.inference.ModelInfer, GOOD)
        assert e.code() == Code.RESOURCE_EXHAUSTED
        assert e.details() == "overloaded: 1 requests are already held (limit 1); retry later"
        assert dict(e.trailing_metadata())["retry-after"] == "1"
        admission.finish(held, served=False)
        assert output(c.infer(GOOD))[0].shape == (2, 1)
        assert (admission.held, admission.bytes, admission.serving) == (0, 0, 0)  # every ticket finished
        c.channel.close()


def test_a_request_not_answered_within_the_deadline_is_deadline_exceeded(loop, models):
    admission = Admission(target=0, concurrency=1, max_requests=8, max_bytes=1 << 20)
    with running(loop, models, admission=admission, deadline_s=0.3) as server:
        c = Client(server.target)
        busy = admission.admit(0)
        loop.run(admission.serve(busy))  # the one place is taken: the next request waits in the queue
        e = c.refusal(c.inference.ModelInfer, GOOD)
        assert (e.code(), e.details()) == (Code.DEADLINE_EXCEEDED, "the request was not answered within 0.3 s")
        admission.finish(busy, served=True)
        assert output(c.infer(GOOD))[0].shape == (2, 1)
        assert (admission.held, admission.serving) == (0, 0)
        c.channel.close()


def test_models_not_loaded_is_unavailable_and_not_ready(loop):
    with running(loop, data_plane.DataPlane()) as server:
        c = Client(server.target)
        assert not c.inference.ServerReady(pb.ServerReadyRequest()).ready
        assert c.health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        for call, request in ((c.inference.ModelInfer, GOOD), (c.inference.ModelReady, pb.ModelReadyRequest(name=LINEAR))):
            e = c.refusal(call, request)
            assert (e.code(), e.details()) == (Code.UNAVAILABLE, "the models are not loaded yet; retry in a moment")
        c.channel.close()


# --------------------------------------------------------------------------------------------- health, drain, observe


def test_health_serves_until_the_drain_begins(loop, models):
    drain = Drain(5.0)
    with running(loop, models, drain=drain) as server:
        c = Client(server.target)
        serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
        watch = c.health.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=30)
        assert next(watch).status == serving
        for service in ("", SERVICE):
            assert c.health.Check(health_pb2.HealthCheckRequest(service=service)).status == serving
        e = c.refusal(c.health.Check, health_pb2.HealthCheckRequest(service="inference.Other"))
        assert e.code() == Code.NOT_FOUND and "no service named 'inference.Other'" in e.details()
        assert drain.begin()
        assert next(watch).status == not_serving  # within a poll (0.5 s)
        watch.cancel()
        for service in ("", SERVICE):
            assert c.health.Check(health_pb2.HealthCheckRequest(service=service)).status == not_serving
        assert {k: v.status for k, v in c.health.List(health_pb2.HealthListRequest()).statuses.items()} == \
            {"": not_serving, SERVICE: not_serving}
        assert not c.inference.ServerReady(pb.ServerReadyRequest()).ready
        assert c.inference.ServerLive(pb.ServerLiveRequest()).live
        assert output(c.infer(GOOD))[0].shape == (2, 1)  # draining: still answering
        c.channel.close()


def test_observe_is_called_once_per_rpc_with_its_status(loop, models):
    with running(loop, models) as server:
        c = Client(server.target)
        c.inference.ServerLive(pb.ServerLiveRequest())
        c.infer(GOOD)
        c.refusal(c.inference.ModelInfer, HOSTILE["NaN"][0])
        c.refusal(c.inference.ModelMetadata, pb.ModelMetadataRequest(name="resnet"))
        c.health.Check(health_pb2.HealthCheckRequest())
        c.channel.close()
        seen = [(method, status) for method, status, seconds, peer in server.observed]
        assert seen == [(f"/{SERVICE}/ServerLive", Code.OK), (f"/{SERVICE}/ModelInfer", Code.OK),
                        (f"/{SERVICE}/ModelInfer", Code.INVALID_ARGUMENT), (f"/{SERVICE}/ModelMetadata", Code.NOT_FOUND),
                        (f"/{HEALTH}/Check", Code.OK)]
        assert all(0 <= seconds < 30 and peer.startswith('ipv4:127.0.0.1:') for _, _, seconds, peer in server.observed)


def test_server_metadata_is_the_data_planes(stub):
    meta = stub.inference.ServerMetadata(pb.ServerMetadataRequest())
    assert (meta.name, meta.version, list(meta.extensions)) == (data_plane.NAME, data_plane.SERVER_VERSION,
                                                                data_plane.EXTENSIONS)


def test_servers_share_a_port(loop, models):
    """grpc.so_reuseport: each worker process binds the service's one port (here two servers in one process)."""
    with running(loop, models) as first, running(loop, models, port=first.port) as second:
        assert second.port == first.port
        c = Client(second.target)
        assert output(c.infer(GOOD))[0].shape == (2, 1)
        c.channel.close()


@pytest.mark.parametrize("junk", [b"\xff\xff\xff", b"\x0a\x05ab", b"\x12\x80\x80\x80\x80\x10"],
                         ids=["bad tag", "truncated string", "truncated length"])
def test_bytes_that_are_no_message_are_invalid_argument_not_internal(server, junk):
    """grpcio answers INTERNAL when its own deserializer fails: the servicer parses the bytes itself."""
    with grpc.insecure_channel(server.target) as channel:
        for method in ("/inference.GRPCInferenceService/ModelInfer", "/grpc.health.v1.Health/Check"):
            with pytest.raises(grpc.RpcError) as e:
                channel.unary_unary(method)(junk, timeout=30)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, e.value.details())
            assert "the message is not a valid" in e.value.details()
        assert Client(server.target).infer(GOOD).model_name == LINEAR
