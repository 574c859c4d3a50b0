"""The GPU run's script (training/on_gpu.sh) and its check (harness.cuda), exercised on the CPU: same steps, tiny."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import artifacts
import artifacts.serving
from harness import cuda

REPO = Path(__file__).resolve().parents[2]
DATA_ROOT = os.environ.get("MNIST_DATA_ROOT", str(REPO.parent / "shared" / "data" / "mnist"))
SERVED = artifacts.serving.default_dir(artifacts.MNIST)


def test_parity_reports_a_changed_answer_and_a_large_difference():
    labels = np.array([0, 1, 2])
    ref = np.eye(3, dtype=np.float32)[[0, 1, 2]] * 0.9 + 0.1 / 3
    assert cuda.parity(ref, ref.copy(), labels, atol=1e-4)["ok"]
    drift = ref.copy()
    drift[0, 0] -= 1e-3
    report = cuda.parity(ref, drift, labels, atol=1e-4)
    assert not report["ok"] and report["argmax_mismatches"] == 0 and report["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)
    flipped = ref[[1, 1, 2]]
    report = cuda.parity(ref, flipped, labels, atol=1.0)
    assert not report["ok"] and report["argmax_mismatches"] == 1
    assert report["accuracy_reference"] == 1.0 and report["accuracy_other"] == pytest.approx(2 / 3)


def test_check_runs_the_served_model_through_the_service_loader(monkeypatch):
    monkeypatch.setenv("MNIST_DATA_ROOT", DATA_ROOT)
    report = cuda.check(SERVED, device="cpu", images=300, seconds=0.01)
    assert report["parity"]["ok"] and report["parity"]["images"] == 300
    assert report["parity"]["accuracy_reference"] > 0.97
    assert {(r["runner"], r["batch"]) for r in report["speed"]} == {
        ("torchscript cpu", 1), ("torchscript cpu", 64), ("onnxruntime cpu", 1), ("onnxruntime cpu", 64)}
    assert all(r["us_per_image"] > 0 for r in report["speed"])
    assert "| onnxruntime cpu |" in cuda.markdown(report)


def test_the_gpu_script_runs_every_step_on_the_cpu(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DEVICE": "cpu",
           "EXTRA": "--max-steps 2", "WORK": str(tmp_path / "work")}
    out = tmp_path / "out"
    run = subprocess.run(["bash", "training/on_gpu.sh", str(out), DATA_ROOT], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert log.count("is in") == 5  # the five teacher members, each trained by its own process
    assert log.count(": loaded from") == 5  # ... and found in the cache by the student's run
    assert "exported mnist-fc-distilled-deep" in log and "== " in log.splitlines()[-1]
    for name in ("model.onnx", "model.pt", "distilled-deep.tgz", "cuda-mnist-fc.json", "cuda-distilled-deep.json"):
        assert (out / name).stat().st_size > 0, name
