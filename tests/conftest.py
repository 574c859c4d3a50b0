"""Shared test setup: a throw-away BentoML home (set before bentoml is imported) and the MNIST data root."""

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

# Tests never touch ~/bentoml: every run gets an empty model store, like a fresh machine.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="bentoml-home-")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

REPO = Path(__file__).resolve().parents[1]
MNIST_ROOT = Path(os.environ.get("MNIST_DATA_ROOT", REPO.parent / "shared" / "data" / "mnist"))


@pytest.fixture(scope="session")
def mnist_test_images() -> tuple[np.ndarray, np.ndarray]:
    """The official 10,000 MNIST test images (uint8, N x 28 x 28) and labels, read without torch."""
    raw = MNIST_ROOT / "MNIST" / "raw"
    images = np.frombuffer((raw / "t10k-images-idx3-ubyte").read_bytes(), np.uint8, offset=16).reshape(-1, 28, 28)
    labels = np.frombuffer((raw / "t10k-labels-idx1-ubyte").read_bytes(), np.uint8, offset=8)
    return images, labels


@pytest.fixture(scope="session")
def client():
    """BentoML's ASGI app in-process (Starlette TestClient), models imported from models/ into the temp store."""
    from starlette.testclient import TestClient

    from service.service import ThermoDigits

    with TestClient(ThermoDigits.to_asgi(), raise_server_exceptions=False) as c:
        yield c


@contextlib.contextmanager
def running_server(target: str, cwd: Path, home: str, timeout: float = 120):
    """`bentoml serve <target>` on a free port until the block ends; yields (url, log file)."""
    from reliability.server import ServerFailed, serving

    try:
        with serving(target, cwd, home, timeout=timeout) as server:
            yield server.url, server.log_file
    except ServerFailed as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def serve():
    return running_server
