"""The Open Inference Protocol client libraries (testkit/clients.txt) in their own virtualenv under build/clients/, made with the interpreter running the tests (below 3.14) and reused while the pins and that interpreter's version are unchanged; ``run`` drives one of the scripts in testkit/oip/ with it.

Why a venv of their own: kserve 0.21.0 and tritonclient[grpc] 2.73.0 need protobuf<7, the service has
protobuf 7 (testkit/clients.txt says more). Each script runs in its own process: kserve and tritonclient.grpc
cannot be imported in one (both register the protobuf package ``inference``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PINS = HERE / "clients.txt"
SCRIPTS = HERE / "oip"
BUILD = REPO / "build" / "clients"


class ClientFailed(RuntimeError):
    """A client script exited non-zero; the message carries its output."""


def home(python: str = sys.executable) -> Path:
    """The venv's folder for this interpreter's major.minor version (the tiers of one checkout share build/)."""
    version = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    return BUILD / f"py{version}"


def stamp(python: str) -> str:
    """What the venv is made from: the pins file's hash and the interpreter's full version."""
    version = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True,
                             text=True, check=True).stdout.strip()
    return json.dumps({"pins_sha256": hashlib.sha256(PINS.read_bytes()).hexdigest(), "python": version})


def interpreter() -> str:
    """A Python the clients install on (kserve 0.21.0 needs one below 3.14): this one, else python3.13 ... on PATH."""
    if sys.version_info < (3, 14):
        return sys.executable
    for name in ("python3.13", "python3.12", "python3.11", "python3"):
        found = shutil.which(name)
        if found and subprocess.run([found, "-c", "import sys; sys.exit(sys.version_info >= (3, 14))"]).returncode == 0:
            return found
    raise ClientFailed("the OIP clients (kserve 0.21.0) need Python 3.11 to 3.13 on PATH as python3.13 ... python3")


def ensure(python: str | None = None, log=print) -> Path:
    """The venv's python (made with `python`, default interpreter()), made again when missing or when the pins or the
    interpreter changed."""
    python = python or interpreter()
    root = home(python)
    venv_python = root / "venv" / "bin" / "python"
    want = stamp(python)
    stamp_file = root / "stamp.json"
    if stamp_file.is_file() and stamp_file.read_text() == want and venv_python.exists():
        return venv_python
    log(f"building the OIP clients' venv from {PINS.relative_to(REPO)} with {python} (a minute or two)")
    started = time.perf_counter()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    subprocess.run([python, "-m", "venv", str(root / "venv")], check=True)
    out = subprocess.run([str(venv_python), "-m", "pip", "install", "--quiet", "--no-input", "--disable-pip-version-check",
                          "-r", str(PINS)], capture_output=True, text=True)
    if out.returncode != 0:
        raise ClientFailed(f"pip install -r {PINS.relative_to(REPO)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    freeze = subprocess.run([str(venv_python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True)
    (root / "freeze.txt").write_text(freeze.stdout)
    (root / "build.json").write_text(json.dumps({"seconds": round(time.perf_counter() - started, 1)}))
    stamp_file.write_text(want)
    return venv_python


def run(venv_python: Path, script: str, job: dict | None = None, timeout: float = 120) -> Any:
    """Run testkit/oip/<script>.py in the clients' venv with `job` as JSON on stdin; what it prints, as JSON."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = subprocess.run([str(venv_python), str(SCRIPTS / f"{script}.py")], input=json.dumps(job), text=True,
                         capture_output=True, timeout=timeout, env=env, cwd=SCRIPTS)
    if out.returncode != 0:
        raise ClientFailed(f"{script}.py exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}")
    return json.loads(out.stdout)


if __name__ == "__main__":  # python -m testkit.clients: build (or check) the venv alone
    print(ensure())
