"""Backend and device selection (tested on CPU), and TorchScript vs ONNX Runtime agreement."""

from pathlib import Path

import numpy as np
import pytest

from service import runtime

MODELS = Path(__file__).resolve().parents[1] / "models"


def test_settings_defaults_and_validation():
    s = runtime.Settings.from_env({})
    assert (s.backend, s.device, s.threads) == ("onnx", "auto", 0)
    s = runtime.Settings.from_env({"SERVICE_BACKEND": "TorchScript", "SERVICE_DEVICE": "cpu", "SERVICE_THREADS": "2"})
    assert (s.backend, s.device, s.threads) == ("torchscript", "cpu", 2)
    with pytest.raises(ValueError, match="SERVICE_BACKEND"):
        runtime.Settings.from_env({"SERVICE_BACKEND": "tensorrt"})
    with pytest.raises(ValueError, match="SERVICE_DEVICE"):
        runtime.Settings.from_env({"SERVICE_DEVICE": "tpu"})


@pytest.mark.parametrize("backend", ["onnx", "torchscript"])
def test_device_selection(backend):
    assert runtime.select_device(backend, "auto", lambda b: True) == "cuda"
    assert runtime.select_device(backend, "auto", lambda b: False) == "cpu"
    assert runtime.select_device(backend, "cpu", lambda b: True) == "cpu"
    assert runtime.select_device(backend, "cuda", lambda b: True) == "cuda"
    with pytest.raises(RuntimeError, match="no CUDA device"):
        runtime.select_device(backend, "cuda", lambda b: False)


def test_this_machine_has_no_cuda_for_onnxruntime_cpu_build():
    assert runtime.select_device("onnx", "auto") in ("cpu", "cuda")  # real probe runs without error


@pytest.mark.parametrize("name,x", [
    ("temperature-linear", np.array([[-1e4], [35.7], [1e4]])),
    ("temperature-mlp", np.array([[-1e4], [35.7], [1e4]])),
    ("mnist-fc", np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)),
])
def test_backends_agree(name, x):
    cpu = runtime.Settings(backend="onnx")
    ts = runtime.Settings(backend="torchscript")
    a = runtime.load(MODELS / name, cpu, "cpu")
    b = runtime.load(MODELS / name, ts, "cpu")
    assert (a.backend, b.backend) == ("onnx", "torchscript")
    np.testing.assert_allclose(a.predict(x), b.predict(x), atol=1e-4 if name.startswith("temp") else 1e-5, rtol=0)


def test_load_refuses_a_tampered_model(tmp_path):
    import shutil

    import artifacts

    copy = tmp_path / "m"
    shutil.copytree(MODELS / "temperature-linear", copy)
    (copy / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(artifacts.ArtifactError, match="model.onnx"):
        runtime.load(copy, runtime.Settings(), "cpu")
