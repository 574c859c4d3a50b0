"""Pick the device, and run a verified model folder on it with its backend (ONNX Runtime or TorchScript)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

import artifacts
from service.settings import Settings


def cuda_available(backend: str) -> bool:
    """Whether `backend` can run on a CUDA GPU in this process (no torch import for ONNX Runtime)."""
    if backend == "onnx":
        import onnxruntime as ort

        return "CUDAExecutionProvider" in ort.get_available_providers()
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def select_device(backend: str, requested: str, has_cuda: Callable[[str], bool] = cuda_available) -> str:
    """auto -> cuda when the backend can use a GPU here, else cpu; an explicit cuda without one is an error."""
    if requested == "cpu":
        return "cpu"
    available = has_cuda(backend)
    if requested == "cuda" and not available:
        raise RuntimeError(f"SERVICE_DEVICE=cuda but no CUDA device is usable by the {backend} backend")
    return "cuda" if available else "cpu"


class OnnxModel:
    def __init__(self, path: Path, device: str, threads: int):
        import onnxruntime as ort

        ort.disable_telemetry_events()  # no usage events, and nothing written to ~/.cache (a read-only root)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads sleep instead of spinning after each run: a server calls run() a few
        # times per request, and spinning threads took ~30 % more CPU per request from the event loop
        # (and other workers) for no gain in throughput (docs/decisions/one-intra-op-thread.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.providers = self.session.get_providers()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


class TorchScriptModel:
    def __init__(self, path: Path, device: str, threads: int):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.device = torch.device(device)
        self.module = torch.jit.load(str(path), map_location=self.device).eval()
        self.providers = [f"torch.jit:{device}"]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.module(self.torch.from_numpy(x).to(self.device)).cpu().numpy()


@dataclass
class LoadedModel:
    name: str
    version: str
    metadata: dict[str, Any]
    backend: str
    device: str
    predict: Callable[[np.ndarray], np.ndarray]

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "device": self.device,
                "providers": getattr(self.predict, "providers", []), **self.metadata}


def verify(model_dir: Path, backend: str, task: artifacts.Task | None = None) -> dict[str, Any]:
    """The model's metadata once the backend's file matches its checksum and, given its `task`, its tensor spec is
    the task's; else ArtifactError naming the bad file or the spec that differs from what the task's endpoints use."""
    metadata = artifacts.verify(Path(model_dir), only=(artifacts.FILES[backend],))
    if task is not None:
        artifacts.check_spec(metadata, task.input, task.output, where=str(Path(model_dir) / artifacts.METADATA_FILE))
    return metadata


def load(model_dir: Path, settings: Settings, device: str, task: artifacts.Task | None = None) -> LoadedModel:
    """``verify`` the model, then load it on `device` (ArtifactError when its file cannot be loaded)."""
    metadata = verify(model_dir, settings.backend, task)
    filename = artifacts.FILES[settings.backend]
    runner = OnnxModel if settings.backend == "onnx" else TorchScriptModel
    try:
        predict = runner(Path(model_dir) / filename, device, settings.threads)
    except Exception as e:  # noqa: BLE001 - any loader failure means "refuse to start", with the file named
        raise artifacts.ArtifactError(f"{Path(model_dir) / filename}: cannot be loaded ({e})") from e
    return LoadedModel(metadata["name"], metadata["version"], metadata, settings.backend, device, predict)


def check(paths: dict[tuple[str, str], Path], settings: Settings) -> None:
    """What a worker would fail on at start, checked without loading: the device, and every version's file and tensor
    spec (`paths`: (model, version) -> its folder); raises naming the version and what is wrong."""
    select_device(settings.backend, settings.device)
    for (name, version), path in paths.items():
        try:
            verify(Path(path), settings.backend, artifacts.model(name).task)
        except artifacts.ArtifactError as e:
            raise artifacts.ArtifactError(f"model {name} version {version} cannot be served: {e}") from None
