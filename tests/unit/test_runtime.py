"""Device selection (tested on CPU with an injected probe), model loading with its spec check, and TorchScript vs ONNX Runtime."""

import shutil

import numpy as np
import pytest

import artifacts
import artifacts.serving
from service.inference import runtime
from service.settings import Settings




@pytest.mark.parametrize("backend", ["onnx", "torchscript"])
def test_device_selection(backend):
    assert runtime.select_device(backend, "auto", lambda b: True) == "cuda"
    assert runtime.select_device(backend, "auto", lambda b: False) == "cpu"
    assert runtime.select_device(backend, "cpu", lambda b: True) == "cpu"
    assert runtime.select_device(backend, "cuda", lambda b: True) == "cuda"
    with pytest.raises(RuntimeError, match="no CUDA device"):
        runtime.select_device(backend, "cuda", lambda b: False)


def test_the_real_probe_finds_no_cuda_on_this_cpu_machine():
    # CI and this machine have no GPU, and the lean install has the CPU build of ONNX Runtime.
    assert runtime.cuda_available("onnx") is False
    assert runtime.select_device("onnx", "auto") == "cpu"


def test_load_checks_the_spec_of_the_models_task(tmp_path):
    m = runtime.load(artifacts.serving.default_dir("mnist-fc"), Settings(), "cpu", artifacts.DIGITS)
    assert m.predict(np.zeros((3, 1, 28, 28), np.float32)).shape == (3, 10)
    wrong = artifacts.Task("digits", artifacts.TensorSpec("images", "float32", (-1, 784)), artifacts.DIGITS.output, 1)
    with pytest.raises(artifacts.ArtifactError, match=r"input is images float32 \[-1, 1, 28, 28\], but the service uses"):
        runtime.load(artifacts.serving.default_dir("mnist-fc"), Settings(), "cpu", wrong)


def test_load_refuses_a_tampered_model(tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(artifacts.serving.default_dir("temperature-linear"), copy)
    (copy / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(artifacts.ArtifactError, match="model.onnx"):
        runtime.load(copy, Settings(), "cpu")


def test_onnx_loads_without_the_torchscript_file(tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(artifacts.serving.default_dir("temperature-linear"), copy)
    (copy / "model.pt").unlink()  # what the lean image's store entry holds
    m = runtime.load(copy, Settings(), "cpu")
    assert m.backend == "onnx" and m.predict(np.array([[35.7]])).shape == (1, 1)


@pytest.mark.parametrize("threads", [1, 2])
def test_onnx_session_uses_the_thread_setting(threads):
    # The default (1) leaves the event loop a core of its own; ONNX Runtime's own default is one per core.
    m = runtime.load(artifacts.serving.default_dir("temperature-linear"), Settings(threads=threads), "cpu")
    options = m.predict.session.get_session_options()
    assert options.intra_op_num_threads == threads
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
