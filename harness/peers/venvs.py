"""Each peer's own virtualenv under build/peers/<name>/, made from its committed pins file and reused while that file is unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BUILD = REPO / "build" / "peers"
TRITON_PYTHON = "3.12"  # PyTriton 0.7.0 does not run on the project's 3.11


@dataclass(frozen=True)
class Peer:
    """A peer: its name, its pins file beside this module, and the Python minor version its venv is made from."""

    name: str
    pins: str
    python: str = "3.11"

    @property
    def pins_file(self) -> Path:
        return HERE / self.pins

    @property
    def home(self) -> Path:
        return BUILD / self.name

    @property
    def python_bin(self) -> Path:
        return self.home / "venv" / "bin" / "python"


PEERS = {p.name: p for p in (
    Peer("bentoml-docs", "bentoml-docs.txt"),
    Peer("litserve", "litserve.txt"),
    Peer("triton", "triton.txt", TRITON_PYTHON),
)}


def pins(path: Path) -> list[str]:
    """The requirement lines of a pins file (comments and blank lines dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def interpreter(version: str) -> str:
    """A Python of `version` (major.minor) that runs: this one, else pyenv's newest, else python<version> on PATH."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    try:
        root = Path(subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found = sorted((root / "versions").glob(f"{version}.*/bin/python"),
                   key=lambda p: [int(x) for x in p.parts[-3].split(".") if x.isdigit()], reverse=True)
    for candidate in [*map(str, found), shutil.which(f"python{version}")]:
        if candidate and subprocess.run([candidate, "-c", f"import sys; assert sys.version.startswith('{version}.')"],
                                        capture_output=True).returncode == 0:
            return candidate  # a pyenv shim of a version not selected exits 127: skipped
    raise SystemExit(f"no working Python {version} (under {root}/versions, or python{version} on PATH): "
                     f"install one, e.g. `pyenv install {version}`")


def library_path(python: str | Path) -> str:
    """LD_LIBRARY_PATH that lets programs linked against libpython (Triton's Python backend stub) find this Python's."""
    real = Path(python).resolve()
    lib = real.parents[1] / "lib"
    return os.pathsep.join(filter(None, [str(lib), os.environ.get("LD_LIBRARY_PATH", "")]))


def stamp(peer: Peer, python: str) -> str:
    """What the venv was made from: the pins file's hash and the interpreter's version."""
    version = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True,
                             text=True, check=True).stdout.strip()
    return json.dumps({"pins_sha256": hashlib.sha256(peer.pins_file.read_bytes()).hexdigest(), "python": version})


def ensure(name: str, log=print) -> dict:
    """The peer's venv, made (or remade) when missing or when its pins file changed; returns what it is and cost."""
    peer = PEERS[name]
    python = interpreter(peer.python)
    want = stamp(peer, python)
    stamp_file = peer.home / "stamp.json"
    built = False
    seconds = 0.0
    if not (stamp_file.is_file() and stamp_file.read_text() == want and peer.python_bin.exists()):
        log(f"building the {name} venv from {peer.pins_file.relative_to(REPO)} with {python} (a few minutes)")
        t0 = time.perf_counter()
        shutil.rmtree(peer.home, ignore_errors=True)
        peer.home.mkdir(parents=True)
        subprocess.run([python, "-m", "venv", str(peer.home / "venv")], check=True)
        out = subprocess.run([str(peer.python_bin), "-m", "pip", "install", "--quiet", "--no-input",
                              "-r", str(peer.pins_file)], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"pip install for the {name} peer failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        freeze = subprocess.run([str(peer.python_bin), "-m", "pip", "freeze"], capture_output=True, text=True, check=True)
        (peer.home / "freeze.txt").write_text(freeze.stdout)
        seconds = round(time.perf_counter() - t0, 1)
        (peer.home / "build.json").write_text(json.dumps({"seconds": seconds, "size_mib": size_mib(peer.home)}))
        stamp_file.write_text(want)
        built = True
    info = json.loads((peer.home / "build.json").read_text())
    return {"name": name, "python": str(peer.python_bin), "built_now": built, "build_s": info["seconds"],
            "size_mib": info["size_mib"], "pins": pins(peer.pins_file),
            "freeze": (peer.home / "freeze.txt").read_text().split()}


def size_mib(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20, 1)


if __name__ == "__main__":  # python -m harness.peers.venvs [name ...]: build (or check) the venvs alone
    for n in sys.argv[1:] or list(PEERS):
        got = ensure(n)
        print(f"{n}: {got['python']} ({'built in ' + str(got['build_s']) + ' s' if got['built_now'] else 'reused'}, "
              f"{got['size_mib']} MiB)")
