"""MNIST export: parity on all 10,000 test images, and the committed model is the one its metadata describes."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

import artifacts
import artifacts.serving
from training import export
from training.mnist_model import MnistFC, Probabilities


COMMITTED = artifacts.serving.default_dir(artifacts.MNIST)


@pytest.fixture(scope="module")
def test_set(mnist_test_images):
    images, labels = mnist_test_images
    return torch.from_numpy(images.copy()).unsqueeze(1).float() / 255.0, labels


def test_fresh_export_passes_parity_on_the_test_set(tmp_path, test_set):
    x, _ = test_set
    torch.manual_seed(0)
    module = Probabilities([MnistFC((64, 32), dropout=0.1, batchnorm=True) for _ in range(2)]).eval()
    exported = export.export_model(module, "mnist-fc", tmp_path, publish=False, example=torch.rand(4, 1, 28, 28),
                                   parity_inputs=x, atol=1e-5, check_argmax=True, input_spec={"name": "images"},
                                   output_spec={"name": "probabilities"}, metrics={})
    assert exported.folder == tmp_path / "mnist-fc" / exported.version and exported.tags == ()
    parity = json.loads((exported.folder / "metadata.json").read_text())["parity"]
    assert parity["inputs"] == 10_000
    assert parity["argmax_mismatches_onnx"] == parity["argmax_mismatches_torchscript"] == 0
    assert max(parity["max_abs_diff_onnx"], parity["max_abs_diff_torchscript"]) <= 1e-5


def test_committed_onnx_and_torchscript_agree_on_every_test_image(test_set):
    x, labels = test_set
    session = ort.InferenceSession(str(COMMITTED / "model.onnx"), providers=["CPUExecutionProvider"])
    p_onnx = np.concatenate([session.run(None, {"images": c.numpy()})[0] for c in x.split(2500)])
    scripted = torch.jit.load(str(COMMITTED / "model.pt"))
    with torch.no_grad():
        p_ts = torch.cat([scripted(c) for c in x.split(2500)]).numpy()
    assert np.abs(p_onnx - p_ts).max() <= 1e-5
    assert (p_onnx.argmax(1) == p_ts.argmax(1)).all()
    meta = artifacts.read_metadata(COMMITTED)
    # The committed file reproduces the accuracy and confusion matrix its metadata reports.
    assert (p_onnx.argmax(1) == labels).mean() == pytest.approx(meta["metrics"]["test_accuracy"], abs=1e-6)
    confusion = np.bincount(labels.astype(int) * 10 + p_onnx.argmax(1), minlength=100).reshape(10, 10)
    assert confusion.tolist() == meta["metrics"]["confusion_matrix"]


def test_committed_metadata_describes_the_recipe_and_data():
    meta = artifacts.read_metadata(COMMITTED)
    assert meta["inputs"][0]["shape"] == [-1, 1, 28, 28] and meta["outputs"][0]["shape"] == [-1, 10]
    assert len(meta["metrics"]["per_class_accuracy"]) == 10
    assert meta["dataset_md5"]["t10k-images-idx3-ubyte.gz"] == "9fb629c4189551a2d022fa330f9573f3"
    assert meta["recipe"]["profile"] == "committee" and meta["train_seconds"] > 0
    assert meta["calibration"]["applied"] and 0 < meta["calibration"]["temperature"] < 1  # label smoothing: under-confident
