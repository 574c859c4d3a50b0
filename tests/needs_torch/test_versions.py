"""From a training run to live traffic: training publishes a version and changes nothing that serves; `versions` lists
every version with its roles; `promote` makes one the default only through its gate (both versions measured with ONNX
Runtime), records a forced override, and never promotes a broken version. Every serving file here is a temporary
copy of models/serving.json, and the model store is the session's own (tests/conftest.py)."""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import artifacts
import artifacts.serving
from training import export, promote, temperature
from training.__main__ import main
from testkit.payloads import mnist_root
from training.mnist_model import MnistFC, Probabilities

REPO = Path(__file__).resolve().parents[2]
LINEAR = artifacts.TEMPERATURE_LINEAR
COMMITTED = artifacts.serving.read().models[LINEAR].default  # the default the candidates are measured against
EXPORTED = re.compile(r"^exported (\S+) version ([0-9a-f]{16})", re.MULTILINE)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def linear(epochs: int, out: Path | None = None) -> str:
    """A temperature-linear version trained `epochs` SGD steps, published to the store (and placed under `out`)."""
    parser = argparse.ArgumentParser()
    temperature.add_arguments(parser)
    args = parser.parse_args(["--model", "linear", "--epochs", str(epochs), "--log-every", "0"]
                             + (["--out", str(out)] if out else []))
    model, metrics = temperature.fit("linear", args)
    return temperature.export("linear", model, metrics, args).version


@pytest.fixture(scope="module")
def worse():
    return linear(300)  # far from the least-squares optimum: MSE ~13 against ~2.93


@pytest.fixture(scope="module")
def equal():
    return linear(3000)  # within 0.1 % of the optimum's MSE


@pytest.fixture
def serving_file(tmp_path):
    path = tmp_path / "models" / "serving.json"
    path.parent.mkdir()
    shutil.copy(artifacts.serving.SERVING_FILE, path)
    return path


def with_roles(path: Path, name: str, **roles) -> None:
    data = json.loads(path.read_text())
    data["models"][name].update(roles)
    path.write_text(json.dumps(data))


def cli(capsys, *argv) -> tuple[int, str]:
    """`python -m training ARGV` in this process: its exit status and what it printed."""
    capsys.readouterr()  # what ran before (training) is not the command's
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().out


def test_the_documented_training_commands_publish_and_leave_what_serves_alone():
    models_before, serving_before = snapshot(REPO / "models"), artifacts.serving.SERVING_FILE.read_bytes()
    runs = [["temperature", "--epochs", "300", "--log-every", "0"],
            ["mnist", "--data-root", str(mnist_root()), "--no-download", "--limit-train", "2048", "--max-steps", "10",
             "--epochs", "1", "--hidden", "32", "--threads", "2"]]
    for argv in runs:
        run = subprocess.run([sys.executable, "-m", "training", *map(str, argv)], cwd=REPO, capture_output=True,
                             text=True, timeout=600, env={**os.environ, "TQDM_DISABLE": "1"})
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        exported = EXPORTED.findall(run.stdout)
        assert len(exported) == (2 if argv[0] == "temperature" else 1), run.stdout[-3000:]
        for name, version in exported:
            assert version in artifacts.store_versions(name, "onnx") and version in artifacts.store_versions(
                name, "torchscript")
            assert f"python -m training promote {name} {version}" in run.stdout
            metadata = artifacts.read_metadata(artifacts.locate(name, version, "onnx", Path("/nonexistent")))
            assert metadata["command"].startswith(f"python -m training {argv[0]}")
            assert metadata["parity"]["inputs"] > 0 and metadata["reference"]["rows"] > 0
    assert snapshot(REPO / "models") == models_before
    assert artifacts.serving.SERVING_FILE.read_bytes() == serving_before


def test_out_places_a_version_folder_and_never_replaces_one(tmp_path):
    version = linear(300, tmp_path)
    folder = tmp_path / LINEAR / version
    artifacts.verify(folder)
    with open(folder / "model.onnx", "ab") as f:
        f.write(b"\0")  # a damaged copy of the same version
    damaged = (folder / "model.onnx").read_bytes()
    with pytest.raises(artifacts.ArtifactError, match="does not match"):
        linear(300, tmp_path)
    assert (folder / "model.onnx").read_bytes() == damaged  # left for a person to look at, not overwritten
    assert sorted(p.name for p in tmp_path.iterdir()) == [LINEAR]


def test_versions_lists_where_each_version_lives_and_its_roles(capsys, serving_file, worse, equal):
    with_roles(serving_file, LINEAR, canary={"version": equal, "weight": 0.1}, shadow={"version": worse, "share": 1.0})
    code, out = cli(capsys, "versions", LINEAR, "--serving-file", serving_file)
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "models/" in lines[COMMITTED] and lines[COMMITTED].rstrip().endswith("default")
    assert "store" in lines[equal] and lines[equal].rstrip().endswith("canary 0.1")
    assert lines[worse].rstrip().endswith("shadow 1") and "val MSE" in lines[worse]


def test_a_worse_version_is_refused_naming_both_figures(capsys, serving_file, worse):
    before = serving_file.read_bytes()
    code, out = cli(capsys, "promote", LINEAR, worse, "--serving-file", serving_file)
    assert code == 1
    reason = out.splitlines()[0]
    assert reason.startswith("refused:") and "worse than the default" in reason and "--force" in reason
    assert re.search(r"MSE 1\d\.\d{4} °C² against MSE 2\.92\d\d °C²", reason), reason
    assert serving_file.read_bytes() == before
    assert not (serving_file.parent / LINEAR).exists()


def test_force_promotes_a_worse_version_and_records_the_override(capsys, serving_file, worse):
    with_roles(serving_file, LINEAR, canary={"version": worse, "weight": 0.2})
    code, out = cli(capsys, "promote", LINEAR, worse, "--serving-file", serving_file, "--force")
    assert code == 0, out
    entry = artifacts.serving.read(serving_file).models[LINEAR]
    assert entry.default == worse and entry.canary is None  # promoting the canary ends its canary role
    record = entry.promoted
    assert record["version"] == worse and record["from"] == COMMITTED and record["forced"] is True
    assert record["candidate"] > 10 and record["default"] == pytest.approx(2.9276, abs=1e-3)
    assert record["tolerance"] == promote.GATES["temperature"].tolerance and record["when"]
    artifacts.verify(serving_file.parent / LINEAR / worse)  # copied beside the serving file: a clone serves it
    assert f"{serving_file.parent / LINEAR / worse}" in out


def test_a_better_or_equal_version_is_promoted_and_so_is_the_old_default_back(capsys, serving_file, equal):
    code, out = cli(capsys, "promote", LINEAR, equal, "--serving-file", serving_file)
    assert code == 0, out
    entry = artifacts.serving.read(serving_file).models[LINEAR]
    assert entry.default == equal and entry.promoted["forced"] is False
    assert entry.promoted["candidate"] >= entry.promoted["default"]  # worse by less than the tolerance
    others = {k: v for k, v in artifacts.serving.read(serving_file).models.items() if k != LINEAR}
    assert others == {k: v for k, v in artifacts.serving.read().models.items() if k != LINEAR}
    code, out = cli(capsys, "promote", LINEAR, COMMITTED, "--serving-file", serving_file)
    assert code == 0, out
    assert artifacts.serving.read(serving_file).models[LINEAR].default == COMMITTED
    code, out = cli(capsys, "promote", LINEAR, COMMITTED, "--serving-file", serving_file)
    assert code == 0 and "already the default" in out


def tamper(folder: Path) -> None:
    with open(folder / "model.onnx", "ab") as f:
        f.write(b"\0")


def wrong_spec(folder: Path) -> None:
    metadata = artifacts.read_metadata(folder)
    metadata["inputs"][0]["dtype"] = "float32"
    artifacts.write_metadata(folder, metadata)


def no_parity(folder: Path) -> None:
    metadata = artifacts.read_metadata(folder)
    del metadata["parity"]
    artifacts.write_metadata(folder, metadata)


def failed_parity(folder: Path) -> None:
    metadata = artifacts.read_metadata(folder)
    metadata["parity"]["max_abs_diff_onnx"] = 1.0
    artifacts.write_metadata(folder, metadata)


@pytest.mark.parametrize("breakage,message", [(tamper, "does not match"), (wrong_spec, "input is readings float32"),
                                              (no_parity, "no parity record"), (failed_parity, "parity record fails")])
def test_a_broken_version_is_refused_even_with_force(capsys, serving_file, breakage, message):
    version = linear(3000, serving_file.parent)  # its folder beside the serving file is the one promote finds first
    breakage(serving_file.parent / LINEAR / version)
    before = serving_file.read_bytes()
    code, out = cli(capsys, "promote", LINEAR, version, "--serving-file", serving_file, "--force")
    assert code == 1
    assert out.startswith("refused:") and message in out.splitlines()[0] and "--force does not override" in out
    assert "default " + COMMITTED + ": MSE 2.92" in out  # the default's figure is still shown
    assert serving_file.read_bytes() == before


def test_an_unknown_version_is_refused(capsys, serving_file):
    code, out = cli(capsys, "promote", LINEAR, "0123456789abcdef", "--serving-file", serving_file, "--force")
    assert code == 1 and "no version 0123456789abcdef" in out and COMMITTED in out


def test_a_worse_digit_model_is_refused_on_the_validation_split(capsys, serving_file):
    torch.manual_seed(0)
    untrained = Probabilities([MnistFC((16,))]).eval()  # about one digit in ten right
    x = torch.rand(64, 1, 28, 28)
    version = export.export_model(
        untrained, artifacts.MNIST, example=x[:4], parity_inputs=x, atol=1e-5, check_argmax=True, metrics={},
        input_spec=artifacts.DIGITS.input.as_dict(), output_spec=artifacts.DIGITS.output.as_dict()).version
    committee = artifacts.serving.read().models[artifacts.MNIST].default
    code, out = cli(capsys, "promote", artifacts.MNIST, version, "--serving-file", serving_file,
                    "--data-root", str(mnist_root()))
    assert code == 1
    figures = re.search(r"(\d+\.\d\d) % against (\d+\.\d\d) %", out.splitlines()[0])
    assert float(figures[1]) < 30 and float(figures[2]) == pytest.approx(
        100 * artifacts.read_metadata(artifacts.version_dir(artifacts.MNIST, committee))["metrics"]["val_accuracy"],
        abs=0.01)  # recomputed with ONNX Runtime, the committee's figure is the one training recorded
    assert "5,000 validation images" in out
