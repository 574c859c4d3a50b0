"""Closed-loop load over gRPC: `clients` callers, each sending its next ModelInfer when the last is answered, over `channels` connections, with pre-serialized requests; every call's send time, latency and status code.

The Open Inference Protocol's ModelInfer (package ``inference``, as Triton and KServe serve it), so the same load
drives this service and Triton. Requests are serialized once and sent as bytes, answers kept as bytes: the
client's own cost per call is grpc.aio's alone.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import grpc
import numpy as np

from service.v2.proto import grpc_predict_v2_pb2 as pb

METHOD = "/inference.GRPCInferenceService/ModelInfer"


def infer_request(model: str, name: str, datatype: str, array: np.ndarray, raw: bool = True) -> bytes:
    """A serialized ModelInferRequest of one input, its values raw (as tritonclient sends them) or in contents."""
    tensor = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=list(array.shape))
    request = pb.ModelInferRequest(model_name=model, inputs=[tensor])
    dtype = {"FP32": "<f4", "FP64": "<f8"}[datatype]
    if raw:
        request.raw_input_contents.append(np.ascontiguousarray(array, dtype=dtype).tobytes())
    else:
        getattr(tensor.contents, f"{datatype.lower()}_contents").extend(np.asarray(array, dtype=dtype).ravel().tolist())
    return request.SerializeToString()


@dataclass
class Calls:
    """One row per call: when it was sent (s from the start), its latency (s) and its status code's name."""

    sent: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    code: list[str] = field(default_factory=list)
    seconds: float = 0.0
    answers: list = field(default_factory=list)  # what `answer` made of each OK answer, in the order answered
    errors: list = field(default_factory=list)  # (sent, code, details) of the first 20 errors

    def codes(self, start: float = 0.0, end: float = float("inf")) -> dict[str, int]:
        """How many calls sent in [start, end) ended with each status."""
        out: dict[str, int] = {}
        for sent, code in zip(self.sent, self.code):
            if start <= sent < end:
                out[code] = out.get(code, 0) + 1
        return out

    def summary(self) -> dict:
        ok = np.asarray([c == "OK" for c in self.code])
        latency = np.asarray(self.latency)
        ms = lambda q: round(1000 * float(np.quantile(latency[ok], q)), 2) if ok.any() else None  # noqa: E731
        return {"calls": len(self.code), "ok": int(ok.sum()), "ok_per_s": round(ok.sum() / self.seconds, 1)
                if self.seconds else 0.0, "codes": self.codes(), "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99),
                "max_ms": round(1000 * float(latency[ok].max()), 2) if ok.any() else None, "errors": self.errors}


async def closed_loop(target: str, request: bytes, clients: int, seconds: float, channels: int = 1,
                      metadata: tuple[tuple[str, str], ...] = (), timeout: float = 30.0,
                      error_pause: float = 0.02, answer: Callable[[bytes], Any] | None = None,
                      stop: asyncio.Event | None = None, calls: Calls | None = None) -> Calls:
    """`clients` callers on `channels` connections to `target` for `seconds` (or until `stop` is set); a caller pauses
    `error_pause` after an error rather than spin on a server that is gone. `answer`: what to keep of each OK answer;
    `calls`: the Calls to fill (to read them while the run goes on)."""
    chans = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(channels)]
    calls = Calls() if calls is None else calls
    t0 = time.perf_counter()
    end = t0 + seconds

    async def caller(i: int) -> None:
        method = chans[i % channels].unary_unary(METHOD)  # bytes in, bytes out
        while (now := time.perf_counter()) < end and not (stop is not None and stop.is_set()):
            try:
                got = await method(request, metadata=metadata or None, timeout=timeout)
                code = "OK"
                if answer is not None:
                    calls.answers.append(answer(got))
            except grpc.aio.AioRpcError as e:
                code = e.code().name
                if len(calls.errors) < 20:
                    calls.errors.append((round(now - t0, 3), code, (e.details() or "")[:200]))
            done = time.perf_counter()
            calls.sent.append(now - t0)
            calls.latency.append(done - now)
            calls.code.append(code)
            if code != "OK" and error_pause:
                await asyncio.sleep(error_pause)

    try:
        await asyncio.gather(*(caller(i) for i in range(clients)))
    finally:
        calls.seconds = time.perf_counter() - t0
        for ch in chans:
            await ch.close()
    return calls


def main(argv: list[str] | None = None) -> None:
    """`python -m testkit.grpc_load`: one closed-loop run, its summary as JSON on stdout (what harness.peers runs)."""
    import argparse
    import json
    import resource

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("target", help="host:port")
    ap.add_argument("request", help="a file holding one serialized ModelInferRequest")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5)
    args = ap.parse_args(argv)
    with open(args.request, "rb") as f:
        request = f.read()
    calls = asyncio.run(closed_loop(args.target, request, args.clients, args.seconds, args.channels))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({**calls.summary(), "seconds": round(calls.seconds, 3),
                      "client_cpu_s": round(usage.ru_utime + usage.ru_stime, 3)}))


if __name__ == "__main__":
    main()
