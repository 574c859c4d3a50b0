"""TorchScript and ONNX Runtime give the same answers for every committed model (needs torch: the TorchScript backend)."""

from pathlib import Path

import numpy as np
import pytest

from service.inference import runtime
from service.settings import Settings

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.mark.parametrize("name,x", [
    ("temperature-linear", np.array([[-1e4], [35.7], [1e4]])),
    ("temperature-mlp", np.array([[-1e4], [35.7], [1e4]])),
    ("mnist-fc", np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)),
])
def test_backends_agree(name, x):
    a = runtime.load(MODELS / name, Settings(backend="onnx"), "cpu")
    b = runtime.load(MODELS / name, Settings(backend="torchscript"), "cpu")
    assert (a.backend, b.backend) == ("onnx", "torchscript")
    np.testing.assert_allclose(a.predict(x), b.predict(x), atol=1e-4 if name.startswith("temp") else 1e-5, rtol=0)
