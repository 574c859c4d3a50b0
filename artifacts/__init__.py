"""The one contract between training and serving: a model version (files + metadata.json), its tensor spec, where versions live (a folder, the BentoML model store), and what serves (artifacts.serving).

A version folder holds ``model.pt`` (TorchScript), ``model.onnx`` (ONNX, weights embedded) and
``metadata.json``.  ``metadata["files"]`` maps each model file to its sha256, and the model's version is
derived from those checksums, so identical files always get the identical version (a retrain that gives
the same files is the same version). ``metadata["inputs"]`` and ``["outputs"]`` each hold one tensor spec
(name, dtype, shape with -1 for the batch): the service refuses a version whose spec is not what its
endpoint feeds it. ``metadata.json`` also holds the version's record (command, recipe, seed, git commit,
data checksums, validation and test metrics, parity) and its reference for monitoring
(artifacts.reference); neither enters the version, which names the model's function: its files.

Versions live side by side, never replacing one another: in the BentoML model store (``bentoml models
list``; what ``bentoml build`` and the image carry), and, for the versions committed to git, in
``models/<name>/<version>/``. Training publishes each export to the store (``publish``) and never changes
what serves: that is the serving file's (artifacts.serving), changed by ``python -m training promote``.

``MODELS`` is the one registry of served models: each entry names a model folder, the ``Task`` it
performs (its tensors and the most rows one request may carry: the same for every model of the task),
the ``model`` value that chooses it on its task's endpoints (the first of a task is the default) and
whether concurrent requests share its calls. Adding a model is adding an entry; training exports to
``models/<name>/`` with the task's tensor spec, and the service derives its store entries, endpoint
choices, spec checks, v2 limits and batchers from the registry.

The store holds one entry per version and backend, holding only that backend's file
(``mnist-fc-onnx:<version>``: ``model.onnx`` and ``metadata.json``), so that a Bento or image carries only
what it loads. The service finds each version it serves in the store, importing it first from
``models/<name>/<version>/`` when the store lacks it (a fresh clone, a fresh ``BENTOML_HOME``). Registering
is idempotent.

This module imports neither torch nor anything HTTP.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"
METADATA_FILE = "metadata.json"
FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}  # backend -> the file it loads
MODEL_FILES = tuple(FILES.values())  # the files a metadata.json must vouch for
VERSION_LENGTH = 16

DTYPES = ("float32", "float64")

log = logging.getLogger(__name__)


class ArtifactError(RuntimeError):
    """A model folder or store entry is missing, incomplete, or does not match its checksums or spec."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor: its name, dtype and shape (-1 = any size, the batch)."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @classmethod
    def parse(cls, entry: Any, where: str) -> "TensorSpec":
        if not isinstance(entry, dict):
            raise ArtifactError(f"{where}: expected an object with name, dtype and shape")
        name, dtype, shape = entry.get("name"), entry.get("dtype"), entry.get("shape")
        if not isinstance(name, str) or not name:
            raise ArtifactError(f"{where}: 'name' must be a non-empty string")
        if dtype not in DTYPES:
            raise ArtifactError(f"{where}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        if (not isinstance(shape, list) or not shape
                or not all(isinstance(d, int) and not isinstance(d, bool) and (d > 0 or d == -1) for d in shape)):
            raise ArtifactError(f"{where}: shape {shape!r} must be a list of sizes (-1 for any)")
        return cls(name, dtype, tuple(shape))

    def describe(self) -> str:
        return f"{self.name} {self.dtype} {list(self.shape)}"

    def as_dict(self) -> dict[str, Any]:
        """The entry metadata.json holds for this tensor."""
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Task:
    """What every model of one task takes and answers, and the most rows (the -1 of the shapes) one request may carry."""

    name: str
    input: TensorSpec
    output: TensorSpec
    max_rows: int


@dataclass(frozen=True)
class Model:
    """One served model: its folder name, its task, the `model` value that chooses it (and what to tell a user about
    it), and whether concurrent requests share its calls."""

    name: str
    task: Task
    choice: str
    about: str
    batched: bool = False


TEMPERATURE = Task("temperature", TensorSpec("readings", "float64", (-1, 1)),
                   TensorSpec("celsius", "float64", (-1, 1)), max_rows=10_000)
DIGITS = Task("digits", TensorSpec("images", "float32", (-1, 1, 28, 28)),
              TensorSpec("probabilities", "float32", (-1, 10)), max_rows=1_024)

TEMPERATURE_LINEAR = "temperature-linear"
TEMPERATURE_MLP = "temperature-mlp"
MNIST = "mnist-fc"  # the committee: the most accurate digit model, served by default
MNIST_DISTILLED = "mnist-fc-distilled"  # one network taught by the committee: a sixth of its cost per image

# The served models; per task, the first is the default choice.
MODELS = (
    Model(TEMPERATURE_LINEAR, TEMPERATURE, "linear", "the least-squares line"),
    Model(TEMPERATURE_MLP, TEMPERATURE, "mlp", "a small Tanh network"),
    Model(MNIST, DIGITS, "committee", "three networks, the most accurate", batched=True),
    Model(MNIST_DISTILLED, DIGITS, "distilled", "one network taught by the committee, about a sixth of its cost "
                                                "per image", batched=True),
)
MODEL_NAMES = tuple(m.name for m in MODELS)


def model(name: str) -> Model:
    """The registry entry named `name` (KeyError names the served ones)."""
    for m in MODELS:
        if m.name == name:
            return m
    raise KeyError(f"no model named {name!r}; the models are {', '.join(MODEL_NAMES)}")


def choices(task: Task) -> dict[str, Model]:
    """The `model` values of `task`'s endpoints and the entries they choose, the default first."""
    return {m.choice: m for m in MODELS if m.task == task}


def io_spec(metadata: dict[str, Any], where: str = METADATA_FILE) -> tuple[TensorSpec, TensorSpec]:
    """The (input, output) tensor specs of a model with one input and one output."""
    specs = []
    for key in ("inputs", "outputs"):
        entries = metadata.get(key)
        if not isinstance(entries, list) or len(entries) != 1:
            raise ArtifactError(f"{where}: '{key}' must list exactly one tensor")
        specs.append(TensorSpec.parse(entries[0], f"{where}: {key}[0]"))
    return specs[0], specs[1]


def check_spec(metadata: dict[str, Any], expected_input: TensorSpec, expected_output: TensorSpec,
               where: str = METADATA_FILE) -> None:
    """Raise ArtifactError naming the difference when the model's spec is not what its caller feeds and reads."""
    for role, got, want in zip(("input", "output"), io_spec(metadata, where), (expected_input, expected_output)):
        if (got.dtype, got.shape) != (want.dtype, want.shape):
            raise ArtifactError(f"{where}: {role} is {got.describe()}, but the service uses {want.describe()}")


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


def verify(model_dir: Path, only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Recompute the sha256 of every listed file (or of the `only` ones); raise ArtifactError naming the first bad file."""
    model_dir = Path(model_dir)
    metadata = read_metadata(model_dir)
    files = metadata.get("files")
    if not isinstance(files, dict) or not files:
        raise ArtifactError(f"{model_dir / METADATA_FILE}: no 'files' checksums")
    if metadata.get("version") != content_version(files):
        raise ArtifactError(f"{model_dir / METADATA_FILE}: version does not match the file checksums")
    for name in only if only is not None else files:
        path = model_dir / name
        if name not in files:
            raise ArtifactError(f"{model_dir / METADATA_FILE}: has no checksum for {name}")
        if not path.is_file():
            raise ArtifactError(f"{path}: listed in metadata.json but missing")
        actual = sha256_file(path)
        if actual != files[name]:
            raise ArtifactError(f"{path}: sha256 {actual} does not match metadata.json ({files[name]})")
    return metadata


def model_id(metadata: dict[str, Any]) -> str:
    """``<name>:<version>``: which exported model this is (what a student records as its teacher)."""
    return f"{metadata['name']}:{metadata['version']}"


def version_dir(name: str, version: str, root: Path = MODELS_DIR) -> Path:
    """Where a version's folder lies under `root` (models/: the versions committed to git)."""
    return Path(root) / name / version


def folder_versions(name: str, root: Path = MODELS_DIR) -> list[str]:
    """The versions of `name` that have a folder under `root`."""
    base = Path(root) / name
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / METADATA_FILE).is_file())


def tag(name: str, version: str, backend: str) -> str:
    """The BentoML tag ``<name>-<backend>:<version>`` of a version's store entry for one backend."""
    if backend not in FILES:
        raise ValueError(f"unknown backend {backend!r}")
    return f"{name}-{backend}:{version}"


def store_tag(model_dir: Path, backend: str) -> str:
    """The BentoML tag of a model folder's store entry for one backend."""
    metadata = read_metadata(model_dir)
    return tag(metadata["name"], metadata["version"], backend)


def store_versions(name: str, backend: str | None = None) -> list[str]:
    """The versions of `name` in the BentoML model store (for one backend, or any)."""
    import bentoml
    from bentoml.exceptions import NotFound

    backends = [backend] if backend else list(FILES)
    found = set()
    for b in backends:
        try:
            found.update(str(m.tag.version) for m in bentoml.models.list(f"{name}-{b}"))
        except NotFound:  # no version of it in the store
            pass
    return sorted(found)


def locate(name: str, version: str, backend: str, root: Path = MODELS_DIR) -> Path:
    """The store entry holding `backend`'s file of the version (imported first from its folder under `root` when the
    store lacks it); ArtifactError naming both places when neither has it."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        return Path(bentoml.models.get(tag(name, version, backend)).path)
    except NotFound:
        pass
    folder = version_dir(name, version, root)
    if not (folder / FILES[backend]).is_file():
        known = sorted(set(folder_versions(name, root)) | set(store_versions(name, backend)))
        raise ArtifactError(f"no version {version} of {name} with a {FILES[backend]}: neither the BentoML model store "
                            f"({tag(name, version, backend)}) nor {folder} has it; the versions here are "
                            f"{', '.join(known) or 'none'}")
    register(folder, backend)
    return Path(bentoml.models.get(tag(name, version, backend)).path)


def publish(model_dir: Path) -> list[str]:
    """Import a verified version folder into the BentoML store, one entry per backend file it has (idempotent): the
    tags."""
    return [register(model_dir, backend) for backend, filename in FILES.items() if (Path(model_dir) / filename).is_file()]


def register(model_dir: Path, backend: str) -> str:
    """Import a verified model folder's `backend` file into the BentoML store, unless that tag is already there."""
    import bentoml
    from bentoml.exceptions import NotFound

    model_dir = Path(model_dir)
    metadata = verify(model_dir, only=(FILES[backend],))
    tag = store_tag(model_dir, backend)
    try:
        bentoml.models.get(tag)
        return tag
    except NotFound:
        pass
    labels = {"task": str(metadata.get("task", "")), "framework": "pytorch", "format": backend}
    with bentoml.models.create(tag, labels=labels, metadata=store_metadata(metadata)) as model:
        for name in (FILES[backend], METADATA_FILE):
            shutil.copy2(model_dir / name, model.path_of(name))
    log.info("registered %s in the BentoML model store", tag)
    return tag


def store_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The part of metadata.json worth showing in `bentoml models get` (not the training history)."""
    keep = ("name", "version", "task", "created_at", "git_commit", "frameworks", "inputs", "outputs", "metrics", "files")
    return json.loads(json.dumps({k: metadata[k] for k in keep if k in metadata}))
