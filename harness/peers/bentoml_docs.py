"""The bentoml-docs peer: /temperature and /digit written the way BentoML 1.4's docs write a service, over the same ONNX files.

A ``@bentoml.service`` class that creates its ONNX Runtime sessions in ``__init__`` and answers through
``@bentoml.api`` methods with typed parameters and pydantic outputs; the route is the method's name.
Nothing else: no middleware, no adaptive batching (the docs' simple services, such as the quickstart and
the iris classifier, have none), BentoML's default worker count and ONNX Runtime's default session
options. Same request bodies and answers as the service. Serve it from this folder:

    bentoml serve bentoml_docs:ThermoDigitsDocs --port 3000
"""

from __future__ import annotations

from typing import Literal

import bentoml
import numpy as np
from pydantic import BaseModel

from onnx_model import Model  # beside this file: the peers run from harness/peers/

DIGIT_MODELS = {"committee": "mnist-fc", "distilled": "mnist-fc-distilled"}


class Temperature(BaseModel):
    celsius: list[float]
    model: str
    version: str


class Digit(BaseModel):
    digit: int
    confidence: float
    probabilities: list[float]
    model: str
    version: str


@bentoml.service
class ThermoDigitsDocs:
    def __init__(self) -> None:
        self.models = {name: Model(name) for name in ("temperature-linear", "temperature-mlp", *DIGIT_MODELS.values())}

    @bentoml.api
    def temperature(self, readings: list[float], model: Literal["linear", "mlp"] = "linear") -> Temperature:
        m = self.models[f"temperature-{model}"]
        celsius = m(np.asarray(readings, dtype=np.float64).reshape(-1, 1))
        return Temperature(celsius=celsius[:, 0].tolist(), model=m.name, version=m.version)

    @bentoml.api
    def digit(self, pixels: list[list[float]], max_value: float = 255,
              model: Literal["committee", "distilled"] = "committee") -> Digit:
        m = self.models[DIGIT_MODELS[model]]
        x = (np.asarray(pixels, dtype=np.float64) / max_value).astype(np.float32).reshape(1, 1, 28, 28)
        p = m(x)[0]
        return Digit(digit=int(p.argmax()), confidence=float(p.max()), probabilities=p.tolist(),
                     model=m.name, version=m.version)
