"""The gRPC service of a real `bentoml serve` through its life: served by every worker, counted in /metrics and the access log, SERVING then NOT_SERVING from SIGTERM on, every call under load answered through the drain and exit 0 inside Kubernetes' grace period, hostile messages answered with their status and the server healthy after, and a taken port stopping the start."""

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.settings import Settings
from service.v2.proto import grpc_predict_v2_pb2 as pb
from service.v2.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from testkit.grpc_load import Calls, closed_loop, infer_request
from testkit.manifests import grace_period_s
from testkit.server import free_port, started_service
from testkit.wait import wait_until, wait_until_async

REPO = Path(__file__).resolve().parents[2]
DRAIN_S = Settings().drain_s
GRPC_LINE = re.compile(r"\[entry_service:[^\]]*:(\d+)\] \S+ \(scheme=grpc,method=POST,path=([^)]*)\) \(status=(\w+)\)")
READINGS = infer_request("temperature-linear", "readings", "FP64", np.array([[35.7], [55.9]]))


def started(**kwargs):
    return started_service(home=tempfile.mkdtemp(prefix="bentoml-home-grpc-"), **kwargs)


def health(target: str) -> str:
    with grpc.insecure_channel(target) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
    return health_pb2.HealthCheckResponse.ServingStatus.Name(status)


def infer(target: str, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
    with grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 * 2**20)]) as channel:
        return pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)


def temperature(readings: list[float], raw: bytes | None = None, shape: list[int] | None = None) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="temperature-linear")
    tensor = request.inputs.add(name="readings", datatype="FP64", shape=shape or [len(readings), 1])
    if raw is None:
        tensor.contents.fp64_contents.extend(readings)
    else:
        request.raw_input_contents.append(raw)
    return request


@pytest.fixture(scope="module")
def server():
    running = started(workers=2, env={"SERVICE_GRPC_ACCESS_LOG": "1"})  # which worker answered: its access log
    yield running
    running.stop()


def test_every_worker_answers_grpc_and_each_call_is_counted_and_logged(server):
    start = server.log_size()
    calls = asyncio.run(closed_loop(server.grpc_target, READINGS, clients=16, seconds=2, channels=16))
    assert calls.codes() == {"OK": len(calls.code)} and len(calls.code) > 16, calls.summary()

    def logged() -> list[tuple[str, str, str]]:
        with open(server.log_file.name) as f:
            f.seek(start)
            return [m for m in GRPC_LINE.findall(f.read()) if m[1].endswith("/ModelInfer")]

    # The supervisor copies the workers' logs into the server's with a delay.
    wait_until(lambda: len(logged()) >= len(calls.code), every_s=0.2,
               message=lambda: f"{len(calls.code)} ModelInfer lines in the access log (seen {len(logged())})")
    lines = logged()
    assert len(lines) == len(calls.code) and {status for _, _, status in lines} == {"OK"}
    assert {worker for worker, _, _ in lines} == {"1", "2"}, "16 connections all went to one worker"
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    counted = re.search(r'grpc_server_handled_total\{grpc_code="OK",grpc_method="/inference.GRPCInferenceService/'
                        r'ModelInfer"\} ([\d.]+)', metrics)
    assert counted and float(counted.group(1)) >= len(calls.code), metrics[-2000:]


@pytest.mark.parametrize("request_, status, message", [
    (temperature([1.0, 2.0], raw=b"\0" * 15), "INVALID_ARGUMENT", "raw_input_contents[0]: 15 bytes, but shape [2, 1] of FP64 is 16 bytes"),
    (temperature([1.0, float("nan")]), "INVALID_ARGUMENT", "expected a finite number, got NaN"),
    (temperature([1.0], shape=[10**12, 1]), "INVALID_ARGUMENT", "the batch (-1 in [-1, 1]) must be 1 to 10,000"),
    (pb.ModelInferRequest(model_name="resnet"), "NOT_FOUND", "no model named 'resnet'"),
    (temperature([0.0] * 3_000_000), "RESOURCE_EXHAUSTED", "larger than max"),
], ids=["raw length", "NaN", "huge shape", "unknown model", "over-size message"])
def test_a_hostile_message_gets_its_status_and_the_server_answers_the_next(server, request_, status, message):
    with pytest.raises(grpc.RpcError) as e:
        infer(server.grpc_target, request_)
    assert e.value.code().name == status and message in e.value.details(), e.value.details()
    answer = infer(server.grpc_target, temperature([35.7]))
    assert abs(answer.outputs[0].contents.fp64_contents[0] - 1.858) < 1e-3
    assert health(server.grpc_target) == "SERVING"


def test_sigterm_under_grpc_load_answers_every_call_during_the_drain_then_stops(record_property):
    """32 callers on 8 connections; SIGTERM once the load is under way: NOT_SERVING from then on, every call
    sent during the drain answered; afterwards UNAVAILABLE (answered so, or the port closed: nothing sent), or
    CANCELLED for a call grpcio still held when it stopped; never anything else; exit 0 inside the grace period
    Kubernetes gives the pod (deploy/k8s/deployment.yaml). The callers go on until the server has exited."""
    grace_s = grace_period_s()
    server = started()
    try:
        async def run():
            calls, stop = Calls(), asyncio.Event()
            t0 = time.perf_counter()  # at most the callers' own start (closed_loop's t0), a few milliseconds before it
            load = asyncio.create_task(closed_loop(server.grpc_target, READINGS, clients=32, seconds=3600, channels=8,
                                                   stop=stop, calls=calls))
            await wait_until_async(lambda: calls.codes().get("OK", 0) >= 64,
                                   message=lambda: f"the load to be under way (calls so far: {calls.codes()})")
            signalled = time.perf_counter()
            os.kill(server.proc.pid, signal.SIGTERM)

            async def not_serving() -> bool:  # raises once the server has gone: it must say so while it drains
                return await asyncio.to_thread(health, server.grpc_target) == "NOT_SERVING"

            await wait_until_async(not_serving, message="gRPC health to answer NOT_SERVING after SIGTERM")
            status = await asyncio.to_thread(server.proc.wait, DRAIN_S + 30)
            exited_after = time.perf_counter() - signalled
            stop.set()
            return await load, status, exited_after, signalled - t0

        calls, status, exited_after, t_signal = asyncio.run(run())
    finally:
        if server.proc.poll() is None:
            server.stop()
    # A call sent in the drain's last second may reach a busy server after the drain's end; its exact length is
    # harness.drain's to check.
    drain_window = (t_signal, t_signal + DRAIN_S - 1.0)
    record_property("figures", {"summary": calls.summary(), "exited_after_s": round(exited_after, 3),
                                "during_drain": calls.codes(*drain_window)})
    assert calls.codes(*drain_window), calls.codes()  # there were calls during the drain
    assert calls.codes(0, drain_window[1]).keys() == {"OK"}, calls.codes()
    assert calls.codes().keys() <= {"OK", "UNAVAILABLE", "CANCELLED"}, calls.codes()
    assert status == 0 and exited_after < grace_s, (status, exited_after, grace_s, server.log()[-3000:])


def test_a_grpc_port_another_server_listens_on_stops_the_start_naming_the_setting():
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as another instance's gRPC workers do
        other.bind(("127.0.0.1", free_port()))
        other.listen(8)
        port = other.getsockname()[1]
        env = {**os.environ, "BENTOML_HOME": tempfile.mkdtemp(prefix="bentoml-home-grpc-port-"),
               "BENTOML_DO_NOT_TRACK": "true", "SERVICE_GRPC_PORT": str(port)}
        proc = subprocess.run([sys.executable, "-m", "bentoml", "serve", "--host", "127.0.0.1", "--port", str(free_port())],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode not in (0, None), out[-2000:]
    assert f"SERVICE_GRPC_PORT={port}" in out and "Address already in use" in out, out[-2000:]


def test_fuzzed_messages_get_a_client_mistake_s_status_never_internal(server, record_property):
    """harness.grpc_fuzz's cases (200 here, seeded): random, mutated and malformed ModelInferRequests, health checks."""
    from harness.grpc_fuzz import fuzz

    result = fuzz(server.grpc_target, cases=200)
    record_property("figures", result)
    assert not result["disallowed"] and result["healthy_after"], result
