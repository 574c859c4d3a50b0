"""The full (GPU) variant's entry point (bentofile.gpu.yaml): the same service, serving TorchScript unless SERVICE_BACKEND says otherwise.

The backend is read when the service is imported, by `bentoml build` as by `bentoml serve`, and it picks
which model files the Bento carries: model.pt here, model.onnx in the lean variant (service.service).
"""

import os

os.environ.setdefault("SERVICE_BACKEND", "torchscript")

from service.service import ThermoDigits  # noqa: E402,F401
