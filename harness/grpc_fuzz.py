"""Fuzzing of the gRPC service: random and mutated ModelInferRequests (and bytes that are not one), each answered with a status a client's mistake deserves and never INTERNAL or UNKNOWN; the server answers a good request afterwards.

    python -m harness.grpc_fuzz                       # starts its own server; 2,000 cases, seed 20261206
    python -m harness.grpc_fuzz --target HOST:PORT --cases 200

Hypothesis draws each case: a message built from the served models' names, versions, tensor names and
datatypes mixed with arbitrary ones, shapes from -2 to 10^13, values with NaN and infinities, raw contents of
any length, parameters of every kind; or a valid message with a few bytes overwritten, cut short or extended;
or arbitrary bytes; or a health check of an arbitrary service. Allowed answers: OK, INVALID_ARGUMENT,
NOT_FOUND, RESOURCE_EXHAUSTED (over the size limit). Results: harness/results/grpc-fuzz-<date>.json.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections import Counter

import grpc
import numpy as np
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, Phase, given, seed as hypothesis_seed, settings, strategies as st

import artifacts
import artifacts.serving
from service.v2.proto import grpc_predict_v2_pb2 as pb
from testkit.grpc_load import infer_request

SEED = 20261206
ALLOWED = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED"}
INFER = "/inference.GRPCInferenceService/ModelInfer"
CHECK = "/grpc.health.v1.Health/Check"
NAMES = list(artifacts.MODEL_NAMES)
VERSIONS = [artifacts.read_metadata(artifacts.serving.default_dir(n))["version"] for n in NAMES]
TENSORS = ["readings", "images", "celsius", "probabilities"]
DATATYPES = ["FP32", "FP64", "INT32", "INT64", "BYTES", "BOOL", "FP16"]
CONTENTS = ["fp32_contents", "fp64_contents", "int_contents", "int64_contents", "uint_contents", "bool_contents",
            "bytes_contents"]
PARAMETERS = ["binary_data_output", "binary_data", "binary_data_size", "classification", "shared_memory_region",
              "priority", "sequence_id", "content_type"]


def text(known: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(known), st.text(max_size=20))


def parameters() -> st.SearchStrategy[dict]:
    value = st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1), st.text(max_size=10))
    return st.dictionaries(text(PARAMETERS), value, max_size=3)


def fill(message_parameters, drawn: dict) -> None:
    for name, value in drawn.items():
        p = message_parameters[name]
        if isinstance(value, bool):
            p.bool_param = value
        elif isinstance(value, int):
            p.int64_param = value
        else:
            p.string_param = value


@st.composite
def tensors(draw) -> pb.ModelInferRequest.InferInputTensor:
    t = pb.ModelInferRequest.InferInputTensor(name=draw(text(TENSORS)), datatype=draw(text(DATATYPES)))
    t.shape.extend(draw(st.lists(st.one_of(st.integers(-2, 40), st.integers(-2, 10**13)), max_size=5)))
    fill(t.parameters, draw(parameters()))
    field = draw(st.sampled_from([None, *CONTENTS]))
    if field in ("fp32_contents", "fp64_contents"):
        values = st.floats(allow_nan=True, allow_infinity=True, width=32 if field == "fp32_contents" else 64)
        getattr(t.contents, field).extend(draw(st.lists(values, max_size=900)))
    elif field in ("int_contents", "uint_contents"):
        getattr(t.contents, field).extend(draw(st.lists(st.integers(0, 2**31 - 1), max_size=50)))
    elif field == "int64_contents":
        t.contents.int64_contents.extend(draw(st.lists(st.integers(-2**63, 2**63 - 1), max_size=50)))
    elif field == "bool_contents":
        t.contents.bool_contents.extend(draw(st.lists(st.booleans(), max_size=50)))
    elif field == "bytes_contents":
        t.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=20), max_size=5)))
    return t


@st.composite
def requests(draw) -> bytes:
    """Serialized ModelInferRequests: near the valid ones, and not."""
    request = pb.ModelInferRequest(model_name=draw(text(NAMES)), model_version=draw(text(["", *VERSIONS])),
                                   id=draw(st.text(max_size=10)))
    fill(request.parameters, draw(parameters()))
    request.inputs.extend(draw(st.lists(tensors(), max_size=3)))
    request.raw_input_contents.extend(draw(st.lists(st.one_of(
        st.binary(max_size=64), st.builds(lambda n: np.random.default_rng(n).random(n).tobytes(), st.integers(0, 800))),
        max_size=3)))
    for name in draw(st.lists(text(TENSORS), max_size=2)):
        output = request.outputs.add(name=name)
        fill(output.parameters, draw(parameters()))
    return request.SerializeToString()


VALID = [infer_request("temperature-linear", "readings", "FP64", np.array([[35.7], [55.9]])),
         infer_request("mnist-fc", "images", "FP32", np.zeros((1, 1, 28, 28)), raw=False)]


@st.composite
def mutated(draw) -> bytes:
    """A valid request with bytes overwritten, cut short or extended."""
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    return bytes(data[:cut]) + draw(st.binary(max_size=16))


CASES = st.one_of(requests().map(lambda b: (INFER, b)), mutated().map(lambda b: (INFER, b)),
                  st.binary(max_size=200).map(lambda b: (INFER, b)),
                  st.text(max_size=40).map(lambda s: (CHECK, health_pb2.HealthCheckRequest(service=s).SerializeToString())))


def fuzz(target: str, cases: int, seed: int = SEED, timeout: float = 30) -> dict:
    """`cases` drawn cases against `target`; the statuses seen, the disallowed ones (first 20), and a check after."""
    seen: Counter[str] = Counter()
    bad: list[dict] = []
    with grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 * 2**20)]) as channel:
        stubs = {INFER: channel.unary_unary(INFER), CHECK: channel.unary_unary(CHECK)}

        @hypothesis_seed(seed)
        @settings(max_examples=cases, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(CASES)
        def case(drawn: tuple[str, bytes]) -> None:
            method, body = drawn
            try:
                stubs[method](body, timeout=timeout)
                code, details = "OK", ""
            except grpc.RpcError as e:
                code, details = e.code().name, e.details() or ""
            seen[f"{method.rsplit('/', 1)[1]} {code}"] += 1
            if code not in ALLOWED and len(bad) < 20:
                bad.append({"method": method, "code": code, "details": details[:300], "request_hex": body[:200].hex()})

        started = time.perf_counter()
        case()
        good = pb.ModelInferResponse.FromString(stubs[INFER](VALID[0], timeout=timeout))
    celsius = np.frombuffer(good.raw_output_contents[0], "<f8") if good.raw_output_contents else []
    healthy = len(celsius) == 2 and math.isclose(float(celsius[0]), 1.8579720733889253, rel_tol=1e-9)
    return {"cases": cases, "seed": seed, "seconds": round(time.perf_counter() - started, 1), "statuses": dict(seen),
            "disallowed": bad, "healthy_after": healthy, "passed": not bad and healthy}


def main(argv: list[str] | None = None) -> int:
    from harness.report import finish, service_settings
    from testkit.server import serving

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", help="HOST:PORT of a running server's gRPC service (default: start `bentoml serve .`)")
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--out", help="results file (default harness/results/grpc-fuzz-<date>.json)")
    args = ap.parse_args(argv)
    if args.target:
        result = fuzz(args.target, args.cases, args.seed)
    else:
        with serving(".", home=tempfile.mkdtemp(prefix="harness-grpc-fuzz-")) as server:
            result = fuzz(server.grpc_target, args.cases, args.seed)
            result["ready_after"] = server.ready()
            result["passed"] = result["passed"] and result["ready_after"]
    print(f"{result['cases']} cases in {result['seconds']} s: {result['statuses']}")
    return finish("grpc-fuzz", result, args.out, service=service_settings())


if __name__ == "__main__":
    sys.exit(main())
