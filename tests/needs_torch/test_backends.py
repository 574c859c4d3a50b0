"""TorchScript and ONNX Runtime give the same answers for every committed model version (needs torch: the TorchScript
backend)."""

import numpy as np
import pytest

import artifacts
from service.inference import runtime
from service.settings import Settings

INPUTS = {
    "temperature-linear": np.array([[-1e4], [35.7], [1e4]]),
    "temperature-mlp": np.array([[-1e4], [35.7], [1e4]]),
    "mnist-fc": np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32),
}


@pytest.mark.parametrize("name,version", [(name, v) for name in INPUTS for v in artifacts.folder_versions(name)])
def test_backends_agree(name, version):
    folder, x = artifacts.version_dir(name, version), INPUTS[name]
    a = runtime.load(folder, Settings(backend="onnx"), "cpu")
    b = runtime.load(folder, Settings(backend="torchscript"), "cpu")
    assert (a.backend, b.backend) == ("onnx", "torchscript")
    np.testing.assert_allclose(a.predict(x), b.predict(x), atol=1e-4 if name.startswith("temp") else 1e-5, rtol=0)
