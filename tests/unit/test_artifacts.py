"""artifacts/: the tensor spec in metadata.json is read and checked, and one backend's file is verified alone."""

import json
import shutil

import pytest

import artifacts
import artifacts.serving
from artifacts import ArtifactError, TensorSpec

DIGITS_IN = TensorSpec("images", "float32", (-1, 1, 28, 28))
DIGITS_OUT = TensorSpec("probabilities", "float32", (-1, 10))


def committed(name: str) -> dict:
    return artifacts.read_metadata(artifacts.serving.default_dir(name))


@pytest.mark.parametrize("name", artifacts.MODEL_NAMES)
def test_every_committed_model_has_a_valid_spec_and_its_own_name(name):
    metadata = committed(name)
    assert metadata["name"] == name
    inp, out = artifacts.io_spec(metadata)
    assert inp.shape[0] == -1 and out.shape[0] == -1  # any batch


def test_the_digit_model_spec_is_what_the_service_feeds():
    artifacts.check_spec(committed(artifacts.MNIST), DIGITS_IN, DIGITS_OUT)


@pytest.mark.parametrize("change,message", [
    ({"dtype": "float64"}, "input is images float64 [-1, 1, 28, 28], but the service uses images float32"),
    ({"shape": [-1, 784]}, "input is images float32 [-1, 784], but the service uses"),
])
def test_a_spec_that_differs_is_refused_naming_the_difference(change, message):
    metadata = committed(artifacts.MNIST)
    metadata["inputs"] = [{**metadata["inputs"][0], **change}]
    with pytest.raises(ArtifactError, match=message.replace("[", r"\[").replace("]", r"\]")):
        artifacts.check_spec(metadata, DIGITS_IN, DIGITS_OUT)


@pytest.mark.parametrize("entry,message", [
    ("images", "expected an object"),
    ({"name": "", "dtype": "float32", "shape": [-1]}, "'name' must be a non-empty string"),
    ({"name": "x", "dtype": "int8", "shape": [-1]}, "dtype 'int8' is not one of float32, float64"),
    ({"name": "x", "dtype": "float32", "shape": []}, "shape"),
    ({"name": "x", "dtype": "float32", "shape": [-1, 0]}, "shape"),
    ({"name": "x", "dtype": "float32", "shape": [-1, True]}, "shape"),
])
def test_malformed_specs_are_refused(entry, message):
    with pytest.raises(ArtifactError, match=message):
        artifacts.io_spec({"inputs": [entry], "outputs": [{"name": "y", "dtype": "float32", "shape": [-1]}]})


def test_exactly_one_input_and_output():
    spec = {"name": "y", "dtype": "float32", "shape": [-1]}
    with pytest.raises(ArtifactError, match="'inputs' must list exactly one tensor"):
        artifacts.io_spec({"inputs": [spec, spec], "outputs": [spec]})
    with pytest.raises(ArtifactError, match="'outputs' must list exactly one tensor"):
        artifacts.io_spec({"inputs": [spec]})


def test_verify_one_backend_file_ignores_the_other(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(artifacts.serving.default_dir(artifacts.TEMPERATURE_LINEAR), folder)
    (folder / "model.pt").unlink()  # what a store entry for ONNX holds
    artifacts.verify(folder, only=("model.onnx",))
    with pytest.raises(ArtifactError, match="model.pt: listed in metadata.json but missing"):
        artifacts.verify(folder)
    (folder / "model.onnx").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="model.onnx: sha256 .* does not match"):
        artifacts.verify(folder, only=("model.onnx",))


def test_metadata_whose_version_does_not_match_its_checksums_is_refused(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(artifacts.serving.default_dir(artifacts.TEMPERATURE_LINEAR), folder)
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["files"]["model.onnx"] = "0" * 64
    (folder / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ArtifactError, match="version does not match"):
        artifacts.verify(folder, only=("model.pt",))


def test_store_tags_name_the_backend():
    folder = artifacts.serving.default_dir(artifacts.MNIST)
    version = committed(artifacts.MNIST)["version"]
    assert artifacts.store_tag(folder, "onnx") == f"mnist-fc-onnx:{version}"
    assert artifacts.store_tag(folder, "torchscript") == f"mnist-fc-torchscript:{version}"
    with pytest.raises(ValueError):
        artifacts.store_tag(folder, "tensorrt")


def test_the_served_digit_model_reproduces_the_accuracy_its_metadata_reports(mnist_test_images):
    import numpy as np
    import onnxruntime as ort

    images, labels = mnist_test_images
    folder = artifacts.serving.default_dir(artifacts.MNIST)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    x = (images.astype(np.float32) / 255).reshape(-1, 1, 28, 28)
    p = np.concatenate([session.run(None, {"images": x[i:i + 2500]})[0] for i in range(0, len(x), 2500)])
    metrics = committed(artifacts.MNIST)["metrics"]
    assert (p.argmax(1) == labels).mean() == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)  # calibrated probabilities are still probabilities
