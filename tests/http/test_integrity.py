"""A tampered model in the store stops the service from starting, and the log names the file."""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

import artifacts

REPO = Path(__file__).resolve().parents[2]


def test_server_refuses_a_tampered_model(tmp_path):
    from testkit.server import free_port

    home = tempfile.mkdtemp(prefix="bentoml-home-tamper-")
    env = {**os.environ, "BENTOML_HOME": home, "BENTOML_DO_NOT_TRACK": "true"}
    subprocess.run([sys.executable, "-c", "import artifacts; artifacts.ensure_registered('onnx')"],
                   cwd=REPO, env=env, check=True)
    name, version = artifacts.store_tag(REPO / "models" / "mnist-fc", "onnx").split(":")
    tampered = Path(home) / "models" / name / version / "model.onnx"
    tampered.write_bytes(tampered.read_bytes()[:-1] + b"\0")

    port = free_port()
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", "--port", str(port)], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            log.seek(0)
            if "does not match metadata.json" in log.read():
                break
            time.sleep(0.5)
        log.seek(0)
        text = log.read()
        assert f"{tampered}: sha256" in text and "does not match metadata.json" in text
        try:
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code
        except httpx.HTTPError:
            ready = None
        assert ready != 200
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
