"""`bentoml build` from this repository: the Bento pins the committed model versions and serves them."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

import artifacts
import artifacts.serving

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bento():
    home = tempfile.mkdtemp(prefix="bentoml-home-build-")
    env = {**os.environ, "BENTOML_HOME": home, "BENTOML_DO_NOT_TRACK": "true"}
    out = subprocess.run([sys.executable, "-m", "bentoml", "build", "-o", "tag"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    tag = out.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    info = subprocess.run([sys.executable, "-m", "bentoml", "get", tag, "-o", "json"], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    return tag, home, json.loads(info.stdout)


def test_bento_pins_the_committed_model_versions_onnx_only(bento):
    _, home, info = bento
    models = {m["tag"] for s in info["services"] for m in s["models"]}
    assert models == {artifacts.store_tag(artifacts.serving.default_dir(name), "onnx") for name in artifacts.MODEL_NAMES}
    for tag in models:  # the lean Bento's models hold the ONNX file alone: no TorchScript weights it never loads
        name, version = tag.split(":")
        files = {p.name for p in (Path(home) / "models" / name / version).iterdir()}
        assert files == {"model.onnx", "metadata.json", "model.yaml"}


def test_the_gpu_variant_pins_the_torchscript_entries(tmp_path):
    # What `bentoml build -f bentofile.gpu.yaml` evaluates: the service as imported through its entry point.
    code = ("import bentoml, service.gpu as g; print(sorted(str(m.tag) for m in vars(g.ThermoDigits.inner).values() "
            "if isinstance(m, bentoml.models.BentoModel)))")
    env = {k: v for k, v in os.environ.items() if k != "SERVICE_BACKEND"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**env, "BENTOML_HOME": str(tmp_path), "BENTOML_DO_NOT_TRACK": "true"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == str(sorted(
        artifacts.store_tag(artifacts.serving.default_dir(name), "torchscript") for name in artifacts.MODEL_NAMES))


def test_bento_carries_only_what_it_needs(bento):
    tag, home, _ = bento
    name, version = tag.split(":")
    src = Path(home) / "bentos" / name / version / "src"
    files = {str(p.relative_to(src)) for p in src.rglob("*") if p.is_file()}
    assert "service/service.py" in files and "artifacts/__init__.py" in files
    assert not any(f.startswith(("tests/", "training/", ".venv")) or f.endswith((".onnx", ".pt", ".png")) for f in files)
    requirements = (Path(home) / "bentos" / name / version / "env" / "python" / "requirements.txt").read_text()
    packages = {line.split("==")[0] for line in requirements.splitlines() if line and not line.startswith("#")}
    assert "onnxruntime" in packages and not {"torch", "torchvision"} & packages


def test_serve_requirements_match_pyproject():
    import tomllib

    pinned = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    def read(name):
        lines = (REPO / "requirements" / name).read_text().splitlines()
        return sorted(line for line in lines if line and not line.startswith("#"))

    assert read("serve.txt") == sorted(pinned)
    train = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["train"]
    torch_pin = next(p for p in train if p.startswith("torch=="))
    assert read("serve-gpu.txt") == sorted([*pinned, torch_pin])


def test_bento_serves_temperature_and_digit(bento, serve, mnist_test_images, tmp_path):
    tag, home, _ = bento
    images, labels = mnist_test_images
    with serve(tag, tmp_path, home) as (url, _):  # cwd outside the repo: everything comes from the Bento
        r = httpx.post(f"{url}/temperature", json={"readings": [35.7]})
        assert r.status_code == 200 and abs(r.json()["celsius"][0] - 1.858) < 1e-3
        r = httpx.post(f"{url}/digit", json={"pixels": images[0].tolist()})
        assert r.status_code == 200 and r.json()["digit"] == labels[0]
        page = httpx.get(f"{url}/")  # the web page travels with the Bento
        assert page.status_code == 200 and "<canvas" in page.text
        assert httpx.get(f"{url}/web/app.js").status_code == 200
