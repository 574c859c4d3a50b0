"""A model that fails verification or does not fit its endpoint stops `bentoml serve` itself (a non-zero exit, the
message naming the model and what is wrong), while a worker that dies after start is replaced."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import artifacts
import artifacts.serving
from testkit.server import exit_status

REPO = Path(__file__).resolve().parents[2]
EXIT_WITHIN_S = 120  # a deadline for the exit, not a bound on its speed: a server still running then serves the model


def test_a_tampered_model_in_the_store_stops_the_server(tmp_path):
    home = tempfile.mkdtemp(prefix="bentoml-home-tamper-")
    env = {**os.environ, "BENTOML_HOME": home, "BENTOML_DO_NOT_TRACK": "true"}
    version = artifacts.serving.read().models[artifacts.MNIST].default
    subprocess.run([sys.executable, "-c", f"import artifacts; artifacts.locate('mnist-fc', '{version}', 'onnx')"],
                   cwd=REPO, env=env, check=True)
    tampered = Path(home) / "models" / "mnist-fc-onnx" / version / "model.onnx"
    tampered.write_bytes(tampered.read_bytes()[:-1] + b"\0")
    status, text = exit_status(REPO, {"BENTOML_HOME": home}, EXIT_WITHIN_S)
    assert status not in (None, 0), text[-3000:]
    assert f"model mnist-fc version {version} cannot be served" in text and f"{tampered}: sha256" in text, text[-3000:]


@pytest.mark.parametrize("change,message", [
    ({"shape": [-1, 784]}, "input is images float32 [-1, 784], but the service uses images float32 [-1, 1, 28, 28]"),
    ({"dtype": "float64"}, "input is images float64 [-1, 1, 28, 28], but the service uses images float32"),
])
def test_a_model_whose_spec_does_not_fit_its_endpoint_stops_the_server(tmp_path, change, message):
    repo = tmp_path / "repo"
    repo.mkdir()
    for entry in ("service", "artifacts", "bentofile.yaml"):
        (shutil.copytree if (REPO / entry).is_dir() else shutil.copy2)(REPO / entry, repo / entry)
    serving = artifacts.serving.read()
    (repo / "models").mkdir()
    shutil.copy2(artifacts.serving.SERVING_FILE, repo / "models" / "serving.json")
    for name, entry in serving.models.items():  # the model files as links: only the metadata differs
        folder = repo / "models" / name / entry.default
        folder.mkdir(parents=True)
        for f in artifacts.version_dir(name, entry.default).iterdir():
            if f.is_file():
                (folder / f.name).symlink_to(f)
    path = repo / "models" / artifacts.MNIST_DISTILLED / serving.models[artifacts.MNIST_DISTILLED].default / \
        artifacts.METADATA_FILE
    metadata = json.loads(path.read_text())
    metadata["inputs"][0].update(change)
    path.unlink()
    path.write_text(json.dumps(metadata))
    status, text = exit_status(repo, within=EXIT_WITHIN_S)
    assert status not in (None, 0), text[-3000:]
    assert f"model {artifacts.MNIST_DISTILLED} version" in text and "cannot be served" in text, text[-3000:]
    assert message in text, text[-3000:]


def test_a_worker_that_dies_after_start_is_replaced():
    """Only start-up failures stop the server: a worker killed while serving is restarted by BentoML's supervisor."""
    import httpx

    from testkit.server import serving
    from testkit.wait import wait_until

    with serving(".", REPO, tempfile.mkdtemp(prefix="bentoml-home-crash-")) as server:
        workers = server.workers()  # however many the default gives
        worker = workers[0]
        worker.kill()

        def replaced_and_answering() -> bool:
            if len([w for w in server.workers() if w.pid != worker.pid]) < len(workers):
                return False
            try:
                return httpx.post(f"{server.url}/temperature", json={"readings": [35.7]}, timeout=10).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(replaced_and_answering, every_s=0.2,
                   message=lambda: f"{len(workers)} workers again, and an answer:\n{server.log()[-3000:]}")
        assert server.proc.poll() is None
