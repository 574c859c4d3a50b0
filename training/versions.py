"""List every version of a model, where it lives and what it does in the serving file.

    python -m training versions mnist-fc
    python -m training versions temperature-mlp --serving-file /tmp/serving.json

A version lives in a folder ``<models>/<name>/<version>/`` (the folder of the serving file, models/ for
models/serving.json, and the repository's models/) and/or in the BentoML model store (``<name>-onnx:<version>``,
``<name>-torchscript:<version>``: what ``python -m training temperature|mnist`` publishes). Each line shows its
created_at and validation metric from its metadata.json (as recorded at training; ``promote`` recomputes it) and its
roles in the serving file: default, canary, shadow, versions (loaded for requests naming them).
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import artifacts
from artifacts import serving

STORE = "store"


@dataclass
class Found:
    """One version of a model: the places holding it (folders, the store) and its metadata (from the first)."""

    version: str
    folders: list[Path] = field(default_factory=list)
    store_paths: dict[str, Path] = field(default_factory=dict)  # backend -> its store entry's folder
    metadata: dict[str, Any] | None = None

    def places(self) -> list[str]:
        return [shown(f.parent.parent) for f in self.folders] + ([STORE] if self.store_paths else [])


def shown(path: Path) -> str:
    """`path` relative to the working directory when it lies below it (as a person would type it)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve())) + "/"
    except ValueError:
        return str(path) + "/"


def roots(serving_path: Path) -> list[Path]:
    """The folders holding version folders for a serving file: its own folder, then the repository's models/."""
    found: list[Path] = []
    for root in (Path(serving_path).resolve().parent, artifacts.MODELS_DIR.resolve()):
        if root not in found:
            found.append(root)
    return found


def store_entries(name: str) -> dict[str, dict[str, Path]]:
    """version -> backend -> the folder of its store entry, for every version of `name` in the BentoML model store."""
    import bentoml
    from bentoml.exceptions import NotFound

    entries: dict[str, dict[str, Path]] = {}
    for backend in artifacts.FILES:
        try:
            found = bentoml.models.list(f"{name}-{backend}")
        except NotFound:  # no entry of that backend (a serving store holds its backend's only)
            continue
        for m in found:
            entries.setdefault(str(m.tag.version), {})[backend] = Path(m.path)
    return entries


def find_all(name: str, folders: list[Path]) -> dict[str, Found]:
    """Every version of `name` in the folders (``<root>/<name>/<version>/``) and the BentoML model store."""
    found: dict[str, Found] = {}
    for root in folders:
        for version in artifacts.folder_versions(name, root):
            found.setdefault(version, Found(version)).folders.append(artifacts.version_dir(name, version, root))
    for version, paths in store_entries(name).items():
        found.setdefault(version, Found(version)).store_paths = paths
    for entry in found.values():
        source = entry.folders[0] if entry.folders else next(iter(entry.store_paths.values()))
        try:
            entry.metadata = artifacts.read_metadata(source)
        except artifacts.ArtifactError:
            entry.metadata = None
    return found


def assemble(name: str, version: str, folders: list[Path], scratch: Path) -> tuple[Path, str]:
    """A whole folder of the version (model files and metadata.json) and where it came from: its first folder, or
    one assembled under `scratch` from its store entries (one per backend). ArtifactError when nothing has it."""
    found = find_all(name, folders).get(version)
    if found is None:
        known = sorted(find_all(name, folders))
        raise artifacts.ArtifactError(
            f"no version {version} of {name} in {', '.join(shown(r) for r in folders)} or the BentoML model store; "
            f"the versions are {', '.join(known) or 'none'} (python -m training versions {name})")
    if found.folders:
        return found.folders[0], shown(found.folders[0])
    target = scratch / name / version
    target.mkdir(parents=True)
    for backend, path in found.store_paths.items():
        shutil.copy2(path / artifacts.FILES[backend], target / artifacts.FILES[backend])
        if not (target / artifacts.METADATA_FILE).exists():
            shutil.copy2(path / artifacts.METADATA_FILE, target / artifacts.METADATA_FILE)
    return target, f"the BentoML model store ({', '.join(artifacts.tag(name, version, b) for b in found.store_paths)})"


def recorded_metric(metadata: dict[str, Any] | None) -> str:
    """The validation metric metadata.json records: accuracy for digit models, MSE for thermometers."""
    metrics = (metadata or {}).get("metrics") or {}
    if isinstance(metrics.get("val_accuracy"), (int, float)):
        return f"val accuracy {100 * metrics['val_accuracy']:.2f} %"
    if isinstance(metrics.get("val_mse"), (int, float)):
        return f"val MSE {metrics['val_mse']:.4f}"
    return "-"


def roles(entry: serving.ModelServing | None) -> dict[str, list[str]]:
    """version -> its roles in one model's serving entry."""
    out: dict[str, list[str]] = {}
    if entry is None:
        return out
    out.setdefault(entry.default, []).append("default")
    if entry.canary:
        out.setdefault(entry.canary.version, []).append(f"canary {entry.canary.weight:g}")
    if entry.shadow:
        out.setdefault(entry.shadow.version, []).append(f"shadow {entry.shadow.share:g}")
    for v in entry.versions:
        out.setdefault(v, []).append("versions")
    return out


def table(name: str, serving_path: Path) -> list[str]:
    """The lines `versions` prints: one per version, the oldest first, then any the serving file names but nothing
    holds."""
    entry = serving.read(serving_path).models.get(name)
    found = find_all(name, roots(serving_path))
    by_role = roles(entry)
    rows = [(f.version, str((f.metadata or {}).get("created_at", "?")), ", ".join(f.places()),
             recorded_metric(f.metadata), ", ".join(by_role.get(f.version, [])) or "-") for f in found.values()]
    rows.sort(key=lambda r: (r[1], r[0]))
    rows += [(v, "?", "missing", "-", ", ".join(r)) for v, r in by_role.items() if v not in found]
    head = ("version", "created_at", "where", "validation (metadata)", f"roles ({shown(serving_path)[:-1]})")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=artifacts.MODEL_NAMES, metavar="NAME",
                   help=f"the model: {', '.join(artifacts.MODEL_NAMES)}")
    p.add_argument("--serving-file", type=Path, default=serving.SERVING_FILE,
                   help="the serving file whose roles to show (default: models/serving.json)")


def main(args: argparse.Namespace) -> int:
    try:
        lines = table(args.name, args.serving_file)
    except artifacts.ArtifactError as e:
        print(f"error: {e}")
        return 1
    print("\n".join(lines))
    return 0
