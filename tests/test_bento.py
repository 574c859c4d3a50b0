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

REPO = Path(__file__).resolve().parents[1]


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


def test_bento_pins_the_committed_model_versions(bento):
    _, _, info = bento
    models = {m["tag"] for s in info["services"] for m in s["models"]}
    expected = {artifacts.tag_of(d) for d in (REPO / "models").iterdir() if (d / "metadata.json").exists()}
    assert models == expected


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
