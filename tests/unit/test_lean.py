"""The service's code path never imports torch, so the lean (ONNX-only) image and test tier exercise the code that users run."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_importing_and_starting_the_service_imports_no_torch():
    code = ("import sys, asyncio; from service.service import ThermoDigits; svc = ThermoDigits(); "
            "asyncio.run(svc.temperature(readings=[35.7])); import testkit.payloads; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    env = {**os.environ, "BENTOML_HOME": tempfile.mkdtemp(prefix="bentoml-home-lean-"), "SERVICE_BACKEND": "onnx"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"

