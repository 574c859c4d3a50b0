"""Shared test setup: one temporary folder for the session, a throw-away BentoML home (set before bentoml is imported) and the MNIST data root."""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from testkit.payloads import mnist_test

# Every temporary folder this process makes (model stores of about 50 MB each, logs) lies in one, removed when the
# session ends: a run of the suite starts some 50 servers with fresh model stores, and repeated runs filled a disk.
SESSION_TMP = tempfile.mkdtemp(prefix="thermodigits-tests-")
tempfile.tempdir = SESSION_TMP


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(SESSION_TMP, ignore_errors=True)


# Tests never touch ~/bentoml: every run gets an empty model store, like a fresh machine.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="bentoml-home-")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mnist_test_images() -> tuple[np.ndarray, np.ndarray]:
    """The official 10,000 MNIST test images (uint8, N x 28 x 28) and labels, read without torch."""
    return mnist_test(synthetic=False)


@pytest.fixture(scope="session")
def client():
    """BentoML's ASGI app in-process (Starlette TestClient), models imported from models/ into the temp store."""
    from starlette.testclient import TestClient

    from service.service import ThermoDigits

    with TestClient(ThermoDigits.to_asgi(), raise_server_exceptions=False) as c:
        yield c


@contextlib.contextmanager
def running_server(target: str, cwd: Path, home: str, timeout: float = 120, env: dict[str, str] | None = None):
    """`bentoml serve <target>` on a free port until the block ends (with `env` added); yields (url, log file)."""
    from testkit.server import ServerFailed, serving

    try:
        with serving(target, cwd, home, env=env, timeout=timeout) as server:
            yield server.url, server.log_file
    except ServerFailed as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def serve():
    return running_server


@pytest.fixture(scope="session")
def oip_clients() -> Path:
    """The python of the OIP clients' venv (KServe's SDK, tritonclient.grpc; testkit/clients.py), made on first use."""
    from testkit import clients

    return clients.ensure()
