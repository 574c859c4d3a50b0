"""Export: parity is enforced, metadata checksums hold, re-export is byte-identical (the same version, its folder left as is),
and a folder registers once per backend."""

import argparse
import json
import shutil
from pathlib import Path

import bentoml
import numpy as np
import onnxruntime as ort
import pytest
import torch

import artifacts
from training import export, temperature


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    parser = argparse.ArgumentParser()
    temperature.add_arguments(parser)
    args = parser.parse_args(["--model", "linear", "--epochs", "20000", "--out", str(out)])
    args.log_every = 0
    model, metrics = temperature.fit("linear", args)
    exported = temperature.export("linear", model, metrics, args)
    assert exported.folder == out / "temperature-linear" / exported.version
    return model, exported.folder, args


def test_export_writes_checksummed_files(exported):
    _, path, _ = exported
    meta = json.loads((path / "metadata.json").read_text())
    assert set(meta["files"]) == {"model.onnx", "model.pt"}
    for name, sha in meta["files"].items():
        assert artifacts.sha256_file(path / name) == sha
    assert meta["version"] == artifacts.content_version(meta["files"])
    for key in ("name", "created_at", "command", "git_commit", "frameworks", "inputs", "outputs", "metrics", "parity",
                "recipe", "seed", "data", "reference"):
        assert key in meta
    assert meta["recipe"] == {"model": "linear", "optimizer": "sgd", "lr": 1e-2, "epochs": 20000, "val_points": 2,
                              "seed": 0}
    assert meta["data"]["sha256"] == temperature.data_sha256() and len(meta["data"]["t_u"]) == 11
    assert meta["inputs"][0]["name"] == "readings" and meta["outputs"][0]["unit"] == "degree Celsius"
    assert not (path / "model.onnx.data").exists()  # weights embedded


def test_onnx_and_torchscript_match_eager_including_extremes(exported):
    model, path, _ = exported
    x = torch.tensor([[-1e4], [-1.0], [0.0], [35.7], [1e4]], dtype=torch.float64)
    expected = model(x).detach().numpy()
    session = ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"readings": x.numpy()})[0], expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(torch.jit.load(str(path / "model.pt"))(x).numpy(), expected, atol=1e-4, rtol=0)
    # dynamic batch: one reading and many readings
    assert session.run(None, {"readings": x[:1].numpy()})[0].shape == (1, 1)
    assert session.run(None, {"readings": np.zeros((777, 1))})[0].shape == (777, 1)


def test_reexport_is_identical_and_registers_once_per_backend(exported):
    model, path, args = exported
    text = (path / "metadata.json").read_text()
    before = json.loads(text)
    again = temperature.export("linear", model, {**before["metrics"], "train_seconds": 0.0}, args)
    assert again.version == path.name == before["version"] and again.folder == path
    assert (path / "metadata.json").read_text() == text  # the version's folder is left as is, not replaced
    assert [p.name for p in path.parent.parent.iterdir()] == ["temperature-linear"]  # no scratch folder left behind
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    for backend in ("onnx", "torchscript"):
        tags = {artifacts.register(path, backend) for _ in range(2)}
        assert tags == {f"temperature-linear-{backend}:{before['version']}"}
        versions = [m.tag.version for m in bentoml.models.list(f"temperature-linear-{backend}")]
        assert versions.count(before["version"]) == 1
        stored = bentoml.models.get(tags.pop())
        # the entry holds only that backend's file (a Bento or image carries what it loads, no more)
        assert sorted(p.name for p in Path(stored.path).iterdir() if p.name != "model.yaml") == sorted(
            [artifacts.FILES[backend], "metadata.json"])


def test_parity_failure_rejects_the_export(tmp_path):
    class Drifting(torch.nn.Module):
        """Traces to x + 1 but answers x + 1 + 1e-3 in eager mode afterwards."""
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
            self.calls = 0
        def forward(self, x):
            self.calls += 1
            return x + self.bias + (1e-3 if self.calls > 3 else 0.0)

    x = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    with pytest.raises(export.ParityError, match="exceeds"):
        export.export_model(Drifting(), "drift", tmp_path, example=x, parity_inputs=x, atol=1e-4,
                            input_spec={"name": "x"}, output_spec={"name": "y"}, metrics={})
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    assert not [m for m in bentoml.models.list() if m.tag.name.startswith("drift-")]  # nor published


def test_verify_names_a_tampered_or_missing_file(exported, tmp_path):
    _, path, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    artifacts.verify(copy)
    with open(copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(artifacts.ArtifactError, match="model.onnx.*does not match"):
        artifacts.verify(copy)
    (copy / "model.pt").unlink()
    shutil.copy(path / "model.onnx", copy / "model.onnx")
    with pytest.raises(artifacts.ArtifactError, match="model.pt.*missing"):
        artifacts.verify(copy)


@pytest.mark.parametrize("name,version", [(m.name, v) for m in artifacts.MODELS for v in artifacts.folder_versions(m.name)])
def test_committed_artifacts_match_their_metadata(name, version):
    meta = artifacts.verify(REPO / "models" / name / version)
    assert (meta["name"], meta["version"]) == (name, version)
    assert meta["parity"]["max_abs_diff_onnx"] <= meta["parity"]["atol"]
    task = artifacts.model(name).task
    artifacts.check_spec(meta, task.input, task.output)
