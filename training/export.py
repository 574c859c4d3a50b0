"""Export a trained module to TorchScript and ONNX, prove parity with the eager model, write metadata.json."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import platform
import re
import shutil
import subprocess
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

import artifacts

log = logging.getLogger(__name__)


class ParityError(RuntimeError):
    """An exported model disagrees with the eager model beyond tolerance: the export is rejected."""


def git_commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=artifacts.REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "training", "artifacts"],
            cwd=artifacts.REPO_ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def frameworks() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
    }


def to_torchscript(module: torch.nn.Module, example: torch.Tensor, path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.14 deprecates jit but it still works and is what we ship
        scripted = torch.jit.trace(module, example, check_trace=True)
        scripted = torch.jit.freeze(scripted)
        torch.jit.save(scripted, str(path))
        make_reproducible(path)
        return torch.jit.load(str(path))


MANGLED = re.compile(rb"___torch_mangle_(\d+)\b")


def make_reproducible(path: Path) -> None:
    """Rewrite a TorchScript zip so that the same weights always give the same bytes (and model version).

    torch.jit.save writes a random ``.data/serialization_id``, ``*.debug_pkl`` call stacks with
    absolute paths and line numbers, and class names ``___torch_mangle_<N>`` numbered by a
    process-wide counter (so a second export in one process differs).  The first two are dropped or
    fixed; the names are renumbered in order of appearance.  Only code (.py) and pickles (.pkl, where
    protocol 2 stores class names as newline-terminated text) are renamed, never tensor data; the
    parity check then runs on the rewritten file.
    """
    with zipfile.ZipFile(path) as zin:
        entries = [(i.filename, zin.read(i)) for i in zin.infolist() if not i.filename.endswith(".debug_pkl")]
    numbering: dict[bytes, bytes] = {}

    def renumber(text: bytes) -> bytes:
        return MANGLED.sub(lambda m: b"___torch_mangle_" + numbering.setdefault(m.group(1), str(len(numbering)).encode()), text)

    entries = [
        (renumber(name.encode()).decode(), renumber(data) if name.endswith((".py", ".pkl")) else data)
        for name, data in entries
    ]
    content = hashlib.sha256(b"".join(n.encode() + d for n, d in entries if not n.endswith("serialization_id")))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zout:
        for name, data in entries:
            if name.endswith(".data/serialization_id"):
                data = str(int(content.hexdigest()[:16], 16)).zfill(40).encode()
            zout.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)


def to_onnx(module: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str) -> None:
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    # Save through onnx so the weights are embedded (one file) and the bytes are deterministic.
    model = program.model_proto
    model.producer_version = ""  # keep the file independent of the exporter's build string
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, str(path), save_as_external_data=False)


def run_onnx(path: Path, inputs: np.ndarray, chunk: int = 4096) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: inputs[i : i + chunk]})[0] for i in range(0, len(inputs), chunk)])


def check_parity(
    eager: torch.nn.Module, scripted: torch.jit.ScriptModule, onnx_path: Path,
    inputs: torch.Tensor, atol: float, check_argmax: bool,
) -> dict[str, Any]:
    with torch.no_grad():
        expected = torch.cat([eager(c) for c in inputs.split(4096)]).numpy()
        from_ts = torch.cat([scripted(c) for c in inputs.split(4096)]).numpy()
    from_onnx = run_onnx(onnx_path, inputs.numpy())
    report: dict[str, Any] = {"inputs": len(inputs), "atol": atol}
    for label, got in (("torchscript", from_ts), ("onnx", from_onnx)):
        if got.shape != expected.shape or not np.isfinite(got).all():
            raise ParityError(f"{label}: output shape {got.shape} / finiteness differs from eager {expected.shape}")
        diff = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))
        report[f"max_abs_diff_{label}"] = diff
        if diff > atol:
            raise ParityError(f"{label}: max abs difference {diff:.3g} exceeds {atol:g}")
        if check_argmax:
            mismatches = int((got.argmax(1) != expected.argmax(1)).sum())
            report[f"argmax_mismatches_{label}"] = mismatches
            if mismatches:
                raise ParityError(f"{label}: argmax differs from eager on {mismatches} inputs")
    return report


def export_model(
    module: torch.nn.Module,
    name: str,
    out_root: Path,
    *,
    example: torch.Tensor,
    parity_inputs: torch.Tensor,
    atol: float,
    input_spec: dict[str, Any],
    output_spec: dict[str, Any],
    metrics: dict[str, Any],
    task: str = "",
    extra: dict[str, Any] | None = None,
    check_argmax: bool = False,
) -> Path:
    """Write ``<out_root>/<name>/{model.pt, model.onnx, metadata.json}``; raise ParityError rather than write a bad export.

    Files are built in a scratch folder and moved in only after parity passes, so a failed export
    never leaves a half-written model folder behind.  Other files in the folder (reports) are kept.
    """
    module = module.eval()
    target = Path(out_root) / name
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
        scratch = Path(tmp)
        scripted = to_torchscript(module, example, scratch / "model.pt")
        to_onnx(module, example, scratch / "model.onnx", input_spec["name"], output_spec["name"])
        parity = check_parity(module, scripted, scratch / "model.onnx", parity_inputs, atol, check_argmax)
        log.info("parity %s", parity)
        files = {f: artifacts.sha256_file(scratch / f) for f in artifacts.MODEL_FILES}
        metadata = {
            "name": name,
            "version": artifacts.content_version(files),
            "task": task,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": git_commit(),
            "frameworks": frameworks(),
            "host": {"cpu_count": os.cpu_count(), "machine": platform.machine()},
            "inputs": [input_spec],
            "outputs": [output_spec],
            "metrics": metrics,
            "parity": parity,
            "files": files,
            **(extra or {}),
        }
        artifacts.write_metadata(scratch, metadata)
        for f in [*files, artifacts.METADATA_FILE]:
            shutil.move(scratch / f, target / f)
    artifacts.verify(target)
    print(f"exported {name} version {metadata['version']} to {target} (parity {parity}); "
          f"the service imports it into its model store when it starts")
    return target
