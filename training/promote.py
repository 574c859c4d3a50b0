"""Make a version the default of its model in the serving file, through a gate: `python -m training promote NAME VERSION`.

    python -m training promote mnist-fc 0123456789abcdef --data-root ../shared/data/mnist
    python -m training promote temperature-mlp 0123456789abcdef --force   # worse, but promoted (and recorded)

The gate measures the candidate and the current default itself, from their ONNX files with ONNX Runtime on the
CPU (a metadata.json's figures are never trusted):

* digit models: accuracy on the fixed 5,000-image validation split (training/mnist_data.py: split_indices,
  SPLIT_SEED). Refused when the candidate is more than 0.1 percentage point (5 images) below the default.
* thermometers: mean squared error in degrees Celsius squared on the 11 readings the models are fit to
  (training/temperature.py T_U, T_C: all the data there is, so this is a fit on training data, not a held-out
  figure). Refused when the candidate's MSE is more than 5 % above the default's.

``--force`` promotes a candidate the metric refuses, and the serving file's ``promoted`` record says so. Nothing
overrides a broken candidate: checksums that fail (artifacts.verify), a tensor spec that is not its task's
(artifacts.check_spec) or a parity record (TorchScript and ONNX against the eager model) missing or failed.

The candidate is looked for in the serving file's folder, the repository's models/ and the BentoML model store.
When the serving file's folder lacks ``<name>/<version>/``, it is copied there, so a fresh clone serves what the
file names. Promoting the canary or shadow version ends that role. A running service reading the file switches
when it sees the change. Exit status: 0 promoted (or already the default), 1 refused: one line why, then the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

import artifacts
from artifacts import serving
from training import versions


@dataclass(frozen=True)
class Gate:
    """How one task's versions are compared: the metric, and how much worse than the default still passes."""

    metric: str  # what the figure is, in words
    tolerance: str  # in words, for people and the serving file's record
    worse: Callable[[float, float], bool]  # (candidate, default) -> True when the candidate is worse beyond tolerance
    show: Callable[[float], str]


ACCURACY_TOLERANCE = 0.001  # digits: 0.1 percentage point, 5 of the 5,000 validation images
MSE_TOLERANCE = 0.05  # thermometers: 5 % relative

GATES = {
    artifacts.DIGITS.name: Gate(
        "accuracy on the 5,000 validation images (ONNX Runtime)",
        "at most 0.1 percentage point below the default's accuracy",
        lambda candidate, default: candidate < default - ACCURACY_TOLERANCE - 1e-9,
        lambda value: f"{100 * value:.2f} %"),
    artifacts.TEMPERATURE.name: Gate(
        "MSE on the 11 readings the thermometers are fit to (ONNX Runtime)",
        "at most 5 % above the default's MSE",
        lambda candidate, default: candidate > default * (1 + MSE_TOLERANCE) + 1e-12,
        lambda value: f"MSE {value:.4f} °C²"),
}


class Refused(Exception):
    """The candidate may not become the default; the message says why in one line."""


# ------------------------------------------------------------------------------------------------ measuring
def evaluation_data(task: artifacts.Task, data_root: str) -> tuple[np.ndarray, np.ndarray]:
    """The inputs and expected answers a task's versions are measured on (labels for digits, degrees for
    thermometers)."""
    if task is artifacts.TEMPERATURE:
        from training.readings import T_C, T_U

        return np.asarray(T_U, dtype=np.float64).reshape(-1, 1), np.asarray(T_C, dtype=np.float64).reshape(-1, 1)
    from training.mnist_data import DEFAULT_DATA_ROOT, load_mnist, split_indices, to_float

    raw = load_mnist(data_root, download=Path(data_root) == Path(DEFAULT_DATA_ROOT))
    _, val_idx = split_indices(len(raw["train_x"]))
    return to_float(raw["train_x"][val_idx]).numpy(), raw["train_y"][val_idx].numpy()


def measure(task: artifacts.Task, folder: Path, data: tuple[np.ndarray, np.ndarray]) -> float:
    """The gate's figure for the version in `folder`, from its ONNX file: accuracy (digits) or MSE (thermometers)."""
    from training.export import run_onnx

    x, expected = data
    out = run_onnx(folder / artifacts.FILES["onnx"], x)
    if task is artifacts.DIGITS:
        return float((out.argmax(1) == expected).mean())
    return float(np.mean((out.astype(np.float64) - expected) ** 2))


# ------------------------------------------------------------------------------------------------ checking
def parity_problem(metadata: dict[str, Any]) -> str | None:
    """What is wrong with the parity record (TorchScript and ONNX against the eager model at export), or None."""
    parity = metadata.get("parity")
    if not isinstance(parity, dict) or not parity.get("inputs") or not isinstance(parity.get("atol"), (int, float)):
        return "its metadata.json has no parity record (inputs, atol, differences)"
    for backend in artifacts.FILES:
        diff = parity.get(f"max_abs_diff_{backend}")
        if not isinstance(diff, (int, float)) or not diff <= parity["atol"]:
            return f"its parity record fails: {backend} max abs difference {diff!r} against atol {parity['atol']:g}"
        if parity.get(f"argmax_mismatches_{backend}", 0):
            return f"its parity record fails: {backend} changes {parity[f'argmax_mismatches_{backend}']} answers"
    return None


def check(name: str, folder: Path) -> dict[str, Any]:
    """The version's metadata once its checksums, tensor spec and parity record are sound; Refused otherwise."""
    try:
        metadata = artifacts.verify(folder)
        if metadata.get("name") != name:
            raise artifacts.ArtifactError(f"{folder}: metadata.json names model {metadata.get('name')!r}, not {name}")
        task = artifacts.model(name).task
        artifacts.check_spec(metadata, task.input, task.output, str(folder / artifacts.METADATA_FILE))
    except artifacts.ArtifactError as e:
        raise Refused(str(e)) from None
    problem = parity_problem(metadata)
    if problem:
        raise Refused(f"{folder}: {problem}")
    return metadata


# ------------------------------------------------------------------------------------------------ writing
def copy_version(source: Path, target: Path) -> bool:
    """Copy a checked version folder to `target` (``<models>/<name>/<version>/``) unless it is there; True if copied."""
    if target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for f in [*artifacts.MODEL_FILES, artifacts.METADATA_FILE]:
            shutil.copy2(source / f, tmp / f)
        if (source / "report").is_dir():
            shutil.copytree(source / "report", tmp / "report")
        os.chmod(tmp, 0o755)
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    artifacts.verify(target)
    return True


def promoted_entry(entry: serving.ModelServing | None, version: str, record: dict[str, Any]) -> serving.ModelServing:
    """The model's serving entry with `version` the default: its canary or shadow role ends, the rest stays."""
    if entry is None:
        return serving.ModelServing(version, promoted=record)
    return replace(entry, default=version,
                   canary=None if entry.canary and entry.canary.version == version else entry.canary,
                   shadow=None if entry.shadow and entry.shadow.version == version else entry.shadow,
                   versions=tuple(v for v in entry.versions if v != version), promoted=record)


def to_commit(paths: list[Path]) -> list[str]:
    """The paths among `paths` that git has uncommitted changes in (all of them when git cannot tell)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=normal", "--", *map(str, paths)],
                             cwd=artifacts.REPO_ROOT, capture_output=True, text=True, check=True).stdout
        return [line[3:] for line in out.splitlines()]
    except (OSError, subprocess.CalledProcessError):
        return [str(p) for p in paths]


# ------------------------------------------------------------------------------------------------ the command
def promote(args: argparse.Namespace) -> None:
    """Make args.version the default of args.name in args.serving_file; Refused (nothing written) when the gate says
    no."""
    name, path = args.name, Path(args.serving_file)
    try:
        version = serving.check_version(args.version, "VERSION")
        state = serving.read(path)
    except artifacts.ArtifactError as e:
        raise Refused(str(e)) from None
    task, gate = artifacts.model(name).task, GATES[artifacts.model(name).task.name]
    entry = state.models.get(name)
    current = entry.default if entry else None
    if version == current:
        print(f"{name} {version} is already the default in {path}: nothing to do")
        return
    roots = versions.roots(path)
    figures: dict[str, str] = {}

    def refuse(reason: str) -> Refused:
        shown = "; ".join(f"{role} {v}: {figures.get(role, 'not measured')}"
                          for role, v in (("candidate", version), ("default", current)) if v)
        return Refused(f"{reason}\n  {gate.metric}: {shown}")

    with tempfile.TemporaryDirectory(prefix="promote-") as scratch:
        try:
            folder, where = versions.assemble(name, version, roots, Path(scratch) / "candidate")
        except artifacts.ArtifactError as e:
            raise Refused(str(e)) from None
        try:
            data = evaluation_data(task, args.data_root)
        except RuntimeError as e:  # MNIST missing: nothing can be measured
            raise Refused(f"cannot measure {gate.metric}: {e}") from None
        default_value, default_problem = None, None
        if current:
            try:
                default_folder, _ = versions.assemble(name, current, roots, Path(scratch) / "default")
                check(name, default_folder)
                default_value = measure(task, default_folder, data)
                figures["default"] = gate.show(default_value)
            except Exception as e:  # noqa: BLE001 - a default that cannot be measured is reported, not a crash
                default_problem = str(e)
        try:
            check(name, folder)
            value = measure(task, folder, data)
        except Exception as e:  # noqa: BLE001 - checksums, spec, parity, or a file ONNX Runtime cannot run
            raise refuse(f"{name} {version} is broken, and --force does not override that: {e}") from None
        figures["candidate"] = gate.show(value)
        forced = None  # why the gate was overridden, if it was
        if default_problem is not None:
            if not args.force:
                raise refuse(f"the default {current} cannot be measured ({default_problem}); --force promotes "
                             f"{version} without the comparison")
            forced = "the default could not be measured"
        elif current and gate.worse(value, default_value):
            if not args.force:
                raise refuse(f"{name} {version} is worse than the default {current}: {figures['candidate']} against "
                             f"{figures['default']}, beyond the tolerance ({gate.tolerance}); --force promotes it anyway")
            forced = "worse than the tolerance allows"
        target = artifacts.version_dir(name, version, path.resolve().parent)
        copied = copy_version(folder, target)
    record = {"version": version, "from": current, "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "metric": gate.metric, "candidate": value, "default": default_value, "tolerance": gate.tolerance,
              "forced": forced is not None}
    if forced:
        record["forced_because"] = forced
    models = dict(state.models)  # the same order: the file's diff shows the one entry that changed
    models[name] = promoted_entry(entry, version, record)
    serving.write(serving.Serving(models), path)
    print(f"promoted {name} {version} (from {where}) to default in {path}"
          + (f", replacing {current}" if current else "") + (f" (FORCED: {forced})" if forced else ""))
    print(f"  {gate.metric}: candidate {figures['candidate']}"
          + (f"; default {figures.get('default', 'not measured')}" if current else ""))
    if copied:
        print(f"  copied the version to {target}")
    changed = to_commit([path, target])
    if changed:
        print("  to commit: " + " ".join(changed))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=artifacts.MODEL_NAMES, metavar="NAME",
                   help=f"the model: {', '.join(artifacts.MODEL_NAMES)}")
    p.add_argument("version", metavar="VERSION", help="the version to make the default (python -m training versions NAME)")
    p.add_argument("--force", action="store_true",
                   help="promote even when the candidate's metric is worse beyond the tolerance (recorded); never "
                        "overrides failed checksums, a wrong tensor spec or a missing or failed parity record")
    p.add_argument("--serving-file", type=Path, default=serving.SERVING_FILE,
                   help="the serving file to change (default: models/serving.json); versions it lacks are copied "
                        "into its folder")
    p.add_argument("--data-root", default=os.environ.get("MNIST_DATA_ROOT", "data"),
                   help="folder holding MNIST/raw/, for digit models (default: $MNIST_DATA_ROOT, else data/)")


def main(args: argparse.Namespace) -> int:
    try:
        promote(args)
    except Refused as e:
        print(f"refused: {e}")
        return 1
    return 0
