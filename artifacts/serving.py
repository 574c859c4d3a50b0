"""What serves: the serving file (``models/serving.json``, committed), read, checked and written here for both sides.

For each model of the registry (artifacts.MODELS) it serves, the file names::

    {"models": {
        "mnist-fc": {
            "default": "73bbf6a747230b2a",                          # answers every request that names no version
            "canary": {"version": "2fffc2f2f5dfabca", "weight": 0.1},  # optional: this share of those instead
            "shadow": {"version": "2fffc2f2f5dfabca", "share": 1.0},   # optional: a copy of this share of the
                                                                        #   default's requests runs on it, unanswered
            "versions": ["..."],                                     # optional: loaded too, for requests naming them
            "promoted": {...}                                        # written by `python -m training promote`
        }, ...}}

A model missing from the file is not served; the default model of each task (the first of its task in
artifacts.MODELS: what the typed endpoints answer with) must be there. Versions are the 16 hex digits of
artifacts.content_version. The service loads every version the file names (``ModelServing.served``), and
``bentoml build`` carries exactly those. ``write`` replaces the file atomically, so a reader (a worker watching it)
never sees half of it. This module imports neither torch nor anything HTTP.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from artifacts import MODEL_NAMES, MODELS, MODELS_DIR, VERSION_LENGTH, ArtifactError, version_dir

SERVING_FILE = MODELS_DIR / "serving.json"
VERSION = re.compile(rf"[0-9a-f]{{{VERSION_LENGTH}}}")
ROLES = ("default", "canary", "shadow", "versions", "promoted")


def check_version(value: Any, where: str) -> str:
    if not isinstance(value, str) or not VERSION.fullmatch(value):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise ArtifactError(f"{where}: {shown} is not a version ({VERSION_LENGTH} hexadecimal digits, as "
                            "`python -m training versions NAME` lists them)")
    return value


def share(value: Any, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ArtifactError(f"{where}.{name}: expected a number from 0 to 1, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Canary:
    version: str
    weight: float  # the share of the requests naming no version that it answers

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "weight": self.weight}


@dataclass(frozen=True)
class Shadow:
    version: str
    share: float = 1.0  # the share of the default's requests copied to it

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "share": self.share}


@dataclass(frozen=True)
class ModelServing:
    """One model's versions and their roles."""

    default: str
    canary: Canary | None = None
    shadow: Shadow | None = None
    versions: tuple[str, ...] = ()
    promoted: dict[str, Any] | None = field(default=None, compare=False)

    def served(self) -> list[str]:
        """Every version to load, the default first, each once."""
        named = [self.default, *(r.version for r in (self.canary, self.shadow) if r), *self.versions]
        return list(dict.fromkeys(named))

    @classmethod
    def parse(cls, entry: Any, where: str) -> "ModelServing":
        if not isinstance(entry, dict):
            raise ArtifactError(f"{where}: expected an object with a default version")
        unknown = set(entry) - set(ROLES)
        if unknown:
            raise ArtifactError(f"{where}: unknown field {sorted(unknown)[0]!r}; the fields are {', '.join(ROLES)}")
        if "default" not in entry:
            raise ArtifactError(f"{where}: names no default version")
        default = check_version(entry["default"], f"{where}.default")
        canary = shadow = None
        if entry.get("canary") is not None:
            c = entry["canary"]
            if not isinstance(c, dict) or set(c) != {"version", "weight"}:
                raise ArtifactError(f"{where}.canary: expected {{\"version\": ..., \"weight\": 0 to 1}}")
            canary = Canary(check_version(c["version"], f"{where}.canary.version"), share(c["weight"], f"{where}.canary",
                                                                                         "weight"))
            if canary.version == default:
                raise ArtifactError(f"{where}.canary: the canary is the default version {default}; name another")
        if entry.get("shadow") is not None:
            sh = entry["shadow"]
            if not isinstance(sh, dict) or "version" not in sh or set(sh) - {"version", "share"}:
                raise ArtifactError(f"{where}.shadow: expected {{\"version\": ..., \"share\": 0 to 1 (default 1)}}")
            shadow = Shadow(check_version(sh["version"], f"{where}.shadow.version"),
                            share(sh.get("share", 1.0), f"{where}.shadow", "share"))
            if shadow.version == default:
                raise ArtifactError(f"{where}.shadow: the shadow is the default version {default}; name another")
        versions = entry.get("versions", [])
        if not isinstance(versions, list):
            raise ArtifactError(f"{where}.versions: expected a list of versions")
        versions = tuple(check_version(v, f"{where}.versions[{i}]") for i, v in enumerate(versions))
        promoted = entry.get("promoted")
        if promoted is not None and not isinstance(promoted, dict):
            raise ArtifactError(f"{where}.promoted: expected an object (the record of the last promotion)")
        return cls(default, canary, shadow, versions, promoted)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"default": self.default}
        if self.canary:
            out["canary"] = self.canary.as_dict()
        if self.shadow:
            out["shadow"] = self.shadow.as_dict()
        if self.versions:
            out["versions"] = list(self.versions)
        if self.promoted:
            out["promoted"] = self.promoted
        return out

    def without(self, version: str) -> "ModelServing":
        """This entry with `version` in no role but the default (ArtifactError when it is the default)."""
        if version == self.default:
            raise ArtifactError(f"{version} is the default version: load another default first")
        return replace(self, canary=None if self.canary and self.canary.version == version else self.canary,
                       shadow=None if self.shadow and self.shadow.version == version else self.shadow,
                       versions=tuple(v for v in self.versions if v != version))


def required() -> dict[str, str]:
    """model -> its task, for each task's default model: what the typed endpoints answer with when no model is chosen."""
    out: dict[str, str] = {}
    for m in MODELS:
        if m.task.name not in out.values():
            out[m.name] = m.task.name
    return out


@dataclass(frozen=True)
class Serving:
    models: dict[str, ModelServing]

    @classmethod
    def parse(cls, data: Any, where: str = "serving.json") -> "Serving":
        if not isinstance(data, dict) or set(data) != {"models"} or not isinstance(data["models"], dict):
            raise ArtifactError(f'{where}: expected {{"models": {{<model>: {{"default": <version>, ...}}, ...}}}}')
        models = {}
        for name, entry in data["models"].items():
            if name not in MODEL_NAMES:
                raise ArtifactError(f"{where}: no model named {name!r}; the models are {', '.join(MODEL_NAMES)}")
            models[name] = ModelServing.parse(entry, f"{where}: models.{name}")
        for name, task in required().items():
            if name not in models:
                raise ArtifactError(f"{where}: names no version of {name}, the default model of the {task} task")
        return cls(models)

    def as_dict(self) -> dict[str, Any]:
        return {"models": {name: entry.as_dict() for name, entry in self.models.items()}}

    def dumps(self) -> str:
        return json.dumps(self.as_dict(), indent=2) + "\n"

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()

    def with_model(self, name: str, entry: ModelServing | None) -> "Serving":
        """This state with `name`'s entry replaced (None: not served); ArtifactError when that leaves a task with no
        default model."""
        models = {k: v for k, v in self.models.items() if k != name}
        if entry is not None:
            models[name] = entry
        else:
            task = required().get(name)
            if task is not None:
                raise ArtifactError(f"{name} is the default model of the {task} task: the typed endpoints answer with "
                                    "it; load another version of it instead")
        return Serving(models)


def loads(text: str, where: str = "serving.json") -> Serving:
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ArtifactError(f"{where}: not JSON ({e})") from None
    return Serving.parse(data, where)


def read(path: Path = SERVING_FILE) -> Serving:
    """The serving file at `path`, checked; ArtifactError naming the file and what is wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ArtifactError(f"{path}: the serving file cannot be read ({e.strerror or e})") from None
    return loads(text, str(path))


def write(serving: Serving, path: Path = SERVING_FILE) -> None:
    """Replace the file at `path` atomically (a reader sees the old file or the new one, never a mix)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(serving.dumps())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def default_dir(name: str, path: Path = SERVING_FILE) -> Path:
    """The committed folder of the version the serving file at `path` makes `name`'s default."""
    return version_dir(name, read(path).models[name].default)
