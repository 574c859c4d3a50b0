"""The one contract between training and serving: a model folder (files + metadata.json) and its BentoML store entry.

A model folder ``models/<name>/`` holds ``model.pt`` (TorchScript), ``model.onnx`` (ONNX, weights
embedded) and ``metadata.json``.  ``metadata["files"]`` maps each model file to its sha256, and the
model's version is derived from those checksums, so identical files always get the identical
BentoML tag: re-registering them is a no-op instead of a new version.

This module imports neither torch nor anything HTTP: training writes folders with it, the service
reads and verifies them with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"
METADATA_FILE = "metadata.json"
MODEL_FILES = ("model.onnx", "model.pt")  # the files a metadata.json must vouch for
VERSION_LENGTH = 16

log = logging.getLogger(__name__)


class ArtifactError(RuntimeError):
    """A model folder or store entry is missing, incomplete or does not match its checksums."""


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def sha256_file(path: Path) -> str:
    return file_digest(path, "sha256")


def content_version(files: dict[str, str]) -> str:
    """A version string that depends only on the model files' checksums (not on time or host)."""
    listing = "".join(f"{name}:{files[name]}\n" for name in sorted(files))
    return hashlib.sha256(listing.encode()).hexdigest()[:VERSION_LENGTH]


def read_metadata(model_dir: Path) -> dict[str, Any]:
    path = Path(model_dir) / METADATA_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: metadata file is missing") from None
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path}: unreadable metadata ({e})") from None


def write_metadata(model_dir: Path, metadata: dict[str, Any]) -> Path:
    path = Path(model_dir) / METADATA_FILE
    path.write_text(json.dumps(metadata, indent=2, sort_keys=False) + "\n")
    return path


def verify(model_dir: Path, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Recompute every listed file's sha256; raise ArtifactError naming the first bad file."""
    model_dir = Path(model_dir)
    metadata = read_metadata(model_dir) if metadata is None else metadata
    files = metadata.get("files")
    if not isinstance(files, dict) or not files:
        raise ArtifactError(f"{model_dir / METADATA_FILE}: no 'files' checksums")
    for name, expected in files.items():
        path = model_dir / name
        if not path.is_file():
            raise ArtifactError(f"{path}: listed in metadata.json but missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactError(
                f"{path}: sha256 {actual} does not match metadata.json ({expected})"
            )
    if metadata.get("version") != content_version(files):
        raise ArtifactError(f"{model_dir / METADATA_FILE}: version does not match the file checksums")
    return metadata


def tag_of(model_dir: Path) -> str:
    """The BentoML tag ``name:version`` a model folder registers as."""
    metadata = read_metadata(model_dir)
    return f"{metadata['name']}:{metadata['version']}"


def register(model_dir: Path) -> str:
    """Import a verified model folder into the BentoML model store, unless that tag is already there."""
    import bentoml  # imported here so training's --no-register path never needs it
    from bentoml.exceptions import NotFound

    model_dir = Path(model_dir)
    metadata = verify(model_dir)
    tag = f"{metadata['name']}:{metadata['version']}"
    try:
        bentoml.models.get(tag)
        return tag
    except NotFound:
        pass
    labels = {
        "task": str(metadata.get("task", "")),
        "framework": "pytorch",
        "formats": "onnx-torchscript",
    }
    with bentoml.models.create(tag, labels=labels, metadata=store_metadata(metadata)) as model:
        for name in [*metadata["files"], METADATA_FILE]:
            shutil.copy2(model_dir / name, model.path_of(name))
    log.info("registered %s in the BentoML model store", tag)
    return tag


def store_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The part of metadata.json worth showing in `bentoml models get` (not the training history)."""
    keep = ("name", "version", "task", "created_at", "git_commit", "frameworks", "inputs", "outputs", "metrics", "files")
    return json.loads(json.dumps({k: metadata[k] for k in keep if k in metadata}))


def ensure_registered(models_dir: Path = MODELS_DIR) -> list[str]:
    """Register every committed model folder that the store lacks (a fresh BENTOML_HOME serves too)."""
    if not Path(models_dir).is_dir():
        return []  # inside a built Bento the models come from the Bento's own store
    return [
        register(d)
        for d in sorted(Path(models_dir).iterdir())
        if (d / METADATA_FILE).is_file() and any((d / f).exists() for f in MODEL_FILES)
    ]
