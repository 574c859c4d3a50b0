"""One model of the repository's models/ (or $PEER_MODELS), the version its serving.json makes the default, under ONNX Runtime's default session options: what the peers call."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

MODELS = Path(os.environ.get("PEER_MODELS", Path(__file__).resolve().parents[2] / "models"))


def default_folder(name: str) -> Path:
    """The folder of `name`'s default version (models/serving.json)."""
    serving = json.loads((MODELS / "serving.json").read_text())
    return MODELS / name / serving["models"][name]["default"]


class Model:
    """One model's default version: its ONNX Runtime session, name and version (from metadata.json)."""

    def __init__(self, name: str) -> None:
        folder = default_folder(name)
        meta = json.loads((folder / "metadata.json").read_text())
        self.name, self.version = meta["name"], meta["version"]
        self.session = ort.InferenceSession(str(folder / "model.onnx"))
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: x})[0]
