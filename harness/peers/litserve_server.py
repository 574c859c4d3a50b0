"""The litserve peer: /temperature and /digit as two LitAPIs (decode_request, predict, encode_response) on one LitServer, over the same ONNX files.

LitServe 0.2.19 takes a list of LitAPIs, each on its own ``api_path``, all on one port; each gets its own
inference worker process. /digit batches (max_batch_size 64, batch_timeout 0.002 s, LitServe's default
batch: numpy.stack); /temperature does not. LitServe's defaults otherwise, and ONNX Runtime's default
session options. /digit answers with the committee model (``mnist-fc``), the default of the service and
the one the benchmark sends; another ``model`` gets a 400. Run it from this folder:

    python litserve_server.py --port 8000
"""

from __future__ import annotations

import argparse

import litserve as ls
import numpy as np
from fastapi import HTTPException

from onnx_model import Model  # beside this file: the peers run from harness/peers/


class TemperatureAPI(ls.LitAPI):
    def setup(self, device):
        self.models = {"linear": Model("temperature-linear"), "mlp": Model("temperature-mlp")}

    def decode_request(self, request):
        if request.get("model", "linear") not in self.models:
            raise HTTPException(400, "model: expected 'linear' or 'mlp'")
        return request.get("model", "linear"), np.asarray(request["readings"], dtype=np.float64).reshape(-1, 1)

    def predict(self, x):
        model, readings = x
        return self.models[model], self.models[model](readings)

    def encode_response(self, output):
        m, celsius = output
        return {"celsius": celsius[:, 0].tolist(), "model": m.name, "version": m.version}


class DigitAPI(ls.LitAPI):
    def setup(self, device):
        self.model = Model("mnist-fc")

    def decode_request(self, request):
        if request.get("model", "committee") != "committee":
            raise HTTPException(400, "model: this peer serves 'committee' only")
        pixels = np.asarray(request["pixels"], dtype=np.float64) / request.get("max_value", 255)
        return pixels.astype(np.float32).reshape(1, 28, 28)

    def predict(self, x):
        return self.model(x)  # x: (batch, 1, 28, 28)

    def encode_response(self, output):
        return {"digit": int(output.argmax()), "confidence": float(output.max()), "probabilities": output.tolist(),
                "model": self.model.name, "version": self.model.version}


def apis() -> list[ls.LitAPI]:
    return [TemperatureAPI(api_path="/temperature"),
            DigitAPI(api_path="/digit", max_batch_size=64, batch_timeout=0.002)]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8000)
    args = ap.parse_args()
    ls.LitServer(apis(), accelerator="cpu").run(host="127.0.0.1", port=args.port, generate_client_file=False)
