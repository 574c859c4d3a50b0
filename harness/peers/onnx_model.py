"""One model folder of the repository's models/ (or $PEER_MODELS) under ONNX Runtime's default session options: what the peers call."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

MODELS = Path(os.environ.get("PEER_MODELS", Path(__file__).resolve().parents[2] / "models"))


class Model:
    """One model folder: its ONNX Runtime session, name and version (from metadata.json)."""

    def __init__(self, name: str) -> None:
        meta = json.loads((MODELS / name / "metadata.json").read_text())
        self.name, self.version = meta["name"], meta["version"]
        self.session = ort.InferenceSession(str(MODELS / name / "model.onnx"))
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: x})[0]
