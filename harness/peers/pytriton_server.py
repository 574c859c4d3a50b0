"""The triton peer: Triton Inference Server's HTTP front and dynamic batcher through PyTriton, ONNX Runtime in the bound callables.

Serves ``temperature-linear`` (``readings`` FP64 [-1, 1] -> ``celsius``, no batching, as the service) and
``mnist-fc`` (``images`` FP32 [-1, 1, 28, 28] -> ``probabilities`` FP32 [-1, 10], dynamic batching up to 64
per call), their tensors read from each model's metadata.json, so that the Open Inference Protocol v2
bodies the service takes at ``/v2/models/{name}/infer`` work here unchanged. PyTriton's and Triton's
defaults otherwise (the dynamic batcher's queue delay 0 unless --max-queue-delay-us), and ONNX Runtime's
default session options. Needs Python 3.12 with its lib/ on LD_LIBRARY_PATH (Triton's Python stub links it):

    python pytriton_server.py --http-port 8000 --grpc-port 8001 --metrics-port 8002

Triton is ready for this benchmark once ``GET /v2/models/<name>/ready`` answers 200 for both models
(``/v2/health/ready`` says 200 before they are loaded).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

MODELS = Path(os.environ.get("PEER_MODELS", Path(__file__).resolve().parents[2] / "models"))
MAX_BATCH = 64


def tensors(specs: list[dict], batching: bool) -> list[Tensor]:
    """metadata.json tensor specs as PyTriton Tensors (with batching, Triton adds the batch dimension itself)."""
    return [Tensor(name=s["name"], dtype=np.dtype(s["dtype"]), shape=tuple(s["shape"][1:] if batching else s["shape"]))
            for s in specs]


def bind(triton: Triton, name: str, config: ModelConfig) -> None:
    """Bind model folder `name` under its own name: one ONNX Runtime session behind one callable."""
    folder = MODELS / name / json.loads((MODELS / "serving.json").read_text())["models"][name]["default"]
    meta = json.loads((folder / "metadata.json").read_text())
    session = ort.InferenceSession(str(folder / "model.onnx"))
    (inp,), (out,) = meta["inputs"], meta["outputs"]

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return {out["name"]: session.run(None, {inp["name"]: inputs[inp["name"]]})[0]}

    triton.bind(model_name=name, infer_func=infer, inputs=tensors(meta["inputs"], config.batching),
                outputs=tensors(meta["outputs"], config.batching), config=config, strict=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--http-port", type=int, default=8000)
    ap.add_argument("--grpc-port", type=int, default=8001)
    ap.add_argument("--metrics-port", type=int, default=8002)
    ap.add_argument("--max-queue-delay-us", type=int, default=0, help="the dynamic batcher's wait for more requests")
    ap.add_argument("--workspace", help="PyTriton's folder for its sockets and Triton's copy (default: under ~/.cache)")
    args = ap.parse_args()
    config = TritonConfig(http_address="127.0.0.1", http_port=args.http_port, grpc_address="127.0.0.1",
                          grpc_port=args.grpc_port, metrics_port=args.metrics_port)
    with Triton(config=config, workspace=args.workspace) as triton:
        bind(triton, "temperature-linear", ModelConfig(batching=False))
        bind(triton, "mnist-fc", ModelConfig(max_batch_size=MAX_BATCH,
                                             batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us)))
        triton.serve()
