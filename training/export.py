"""Export a trained module as a new model version: TorchScript and ONNX, parity with the eager model proved, metadata.json
written, then published to the BentoML model store and, on request, placed in ``<out>/<name>/<version>/``.

Training never replaces a version nor changes what serves: a version is named by its files' checksums, and only
``python -m training promote`` changes the serving file (models/serving.json)."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Exported:
    """Where one export went: its model name and version, its metadata, the folder it was placed in (None when it
    went to the BentoML model store only) and its store tags (empty when not published)."""

    name: str
    version: str
    metadata: dict[str, Any]
    folder: Path | None
    tags: tuple[str, ...]


def command() -> str:
    """How this process was started, as a shell line (``python -m training ...`` for the training command)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).resolve() == (Path(__file__).parent / "__main__.py").resolve():
        argv[:1] = ["python", "-m", "training"]
    return shlex.join(argv)


def build(
    module: torch.nn.Module,
    name: str,
    folder: Path,
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
    reference: Callable[[Path], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write ``model.pt``, ``model.onnx`` and ``metadata.json`` into the empty `folder`; return the metadata.

    ParityError when TorchScript or ONNX Runtime disagree with the eager model on `parity_inputs` (then
    `folder` holds no metadata.json: it is not a version). The metadata holds the version's record: the
    command, git commit, frameworks, specs, metrics, parity, checksums and whatever `extra` adds (recipe,
    seed, data checksums), and `reference(folder)`: its monitoring reference (training/reference.py), computed
    from the exported ONNX file.
    """
    module = module.eval()
    scripted = to_torchscript(module, example, folder / "model.pt")
    to_onnx(module, example, folder / "model.onnx", input_spec["name"], output_spec["name"])
    parity = check_parity(module, scripted, folder / "model.onnx", parity_inputs, atol, check_argmax)
    log.info("parity %s", parity)
    files = {f: artifacts.sha256_file(folder / f) for f in artifacts.MODEL_FILES}
    metadata = {
        "name": name,
        "version": artifacts.content_version(files),
        "task": task,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command(),
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
    if reference is not None:
        metadata["reference"] = reference(folder)
    artifacts.write_metadata(folder, metadata)
    return artifacts.verify(folder)


def place(scratch: Path, target: Path) -> bool:
    """Move the version folder `scratch` to `target` (``<out>/<name>/<version>/``); False when `target` was there.

    A folder named by the version holds the same files, so an existing one is left as is, never replaced; one
    that fails its checksums or names another version raises ArtifactError (look at it: nothing is touched).
    """
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(scratch, target)  # one step: a reader sees no folder or the whole one
            return True
        except OSError:
            if not target.exists():
                raise
    metadata = artifacts.verify(target)
    if metadata.get("version") != target.name:
        raise artifacts.ArtifactError(f"{target}: holds version {metadata.get('version')}, not {target.name}")
    return False


def export_model(
    module: torch.nn.Module,
    name: str,
    out_root: Path | None = None,
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
    publish: bool = True,
    report: Callable[[Path], Any] | None = None,
    reference: Callable[[Path], dict[str, Any]] | None = None,
) -> Exported:
    """Export `module` as a new version of `name`: publish it to the BentoML model store and, with `out_root`,
    place it at ``<out_root>/<name>/<version>/``; ParityError rather than deliver a bad export.

    The files are built and checked (parity, checksums) in a scratch folder, so a failed export leaves nothing
    behind. The version is a hash of the model files: exporting identical files again is the same version,
    and neither the store entry nor an existing folder of it is replaced. `report(folder)` writes extra
    files (the MNIST plots) into a version folder about to be placed; store-only exports get no report.
    Nothing here changes what serves (the serving file, ``python -m training promote``).
    """
    if out_root is None and not publish:
        raise ValueError("an export neither published nor placed in a folder would be lost")
    if out_root is not None:
        Path(out_root).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".export-{name}-", dir=out_root))  # out_root: then a rename places it
    os.chmod(scratch, 0o755)  # mkdtemp's 0700 would become the version folder's
    try:
        metadata = build(module, name, scratch, example=example, parity_inputs=parity_inputs, atol=atol,
                         input_spec=input_spec, output_spec=output_spec, metrics=metrics, task=task, extra=extra,
                         check_argmax=check_argmax, reference=reference)
        version = metadata["version"]
        tags = tuple(artifacts.publish(scratch)) if publish else ()
        folder, placed = None, False
        if out_root is not None:
            folder = artifacts.version_dir(name, version, Path(out_root))
            if report is not None and not folder.exists():
                report(scratch)
            placed = place(scratch, folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    parity = ", ".join(f"{k} {v:.3g}" for k, v in metadata["parity"].items() if k.startswith("max_abs_diff"))
    print(f"exported {name} version {version} (parity on {metadata['parity']['inputs']} inputs: {parity})")
    if tags:
        print(f"  in the BentoML model store: {', '.join(tags)}")
    if folder is not None:
        print(f"  folder: {folder}" + ("" if placed else " (already there: the same files, left as is)"))
    if name in artifacts.MODEL_NAMES:
        print(f"  nothing serves it yet; next: python -m training promote {name} {version}")
    return Exported(name, version, metadata, folder, tags)
