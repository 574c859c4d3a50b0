"""What the workers of one replica (one ``bentoml serve``) share, as files in one folder: the serving state in force, each live worker's acknowledgement of it, and the lock that lets one model change through at a time.

The folder (``THERMODIGITS_REPLICA_DIR``) is made once per replica by the process that imports the service and is
not a worker (``bentoml serve``'s own, before its workers start; or an in-process app), which names it in the
environment its workers inherit; a worker joins the folder named there. In it:

* ``state.json``: ``{"generation": n, "source": <digest of the serving file it came from>, "serving": {...}}``,
  replaced atomically by ``publish`` (generation + 1); workers notice a new one by its stat (``stamp``);
* ``workers/<pid>``: one per live worker (``join``, ``leave``); a file whose process is gone does not count;
* ``acks/<pid>.json``: ``{"generation": n, "error": null | "why it was refused"}``: the state each worker has applied;
* ``lock``: ``flock``-ed by the worker that is changing the state; the kernel releases it if that worker dies.

Nothing here outlives the replica: a restart starts again from the serving file. This module does no model work and
uses no event loop but ``wait_applied``'s polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from artifacts.serving import Serving

ENV = "THERMODIGITS_REPLICA_DIR"


@dataclass(frozen=True)
class State:
    generation: int
    serving: Serving
    source: str  # digest of the serving file's state this one started from


def _write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class Replica:
    """The shared folder of one replica, seen from one process."""

    def __init__(self, folder: Path, pid: int | None = None, alive: Callable[[int], bool] = alive):
        self.folder = Path(folder)
        self.pid = os.getpid() if pid is None else pid
        self.alive = alive  # whether a worker's process runs (tests give workers of their own)
        self.state_file = self.folder / "state.json"

    @classmethod
    def create(cls, serving: Serving, source: str, parent: str | None = None) -> "Replica":
        """A new folder holding generation 1 of `serving` (in the supervisor, before the workers start)."""
        folder = Path(tempfile.mkdtemp(prefix="thermodigits-replica-", dir=parent))
        (folder / "workers").mkdir()
        (folder / "acks").mkdir()
        replica = cls(folder)
        _write_json(replica.state_file, {"generation": 1, "source": source, "serving": serving.as_dict()})
        return replica

    @classmethod
    def for_process(cls, serving: Serving, source: str, worker: bool) -> tuple["Replica", bool]:
        """A worker's: (the replica the environment names, False). Any other process's: (a new one, named in the
        environment for the workers it starts, True); whatever the environment said before (a server started by a
        test or a harness makes its own)."""
        if worker:
            folder = os.environ.get(ENV)
            if not folder or not Path(folder, "state.json").is_file():
                raise RuntimeError(f"this worker's replica folder is missing ({ENV}={folder!r}): start the service "
                                   "with `bentoml serve`, which makes it")
            return cls(Path(folder)), False
        replica = cls.create(serving, source)
        os.environ[ENV] = str(replica.folder)
        return replica, True

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    # ------------------------------------------------------------------------------------------ the state

    def stamp(self) -> tuple[int, int, int]:
        """Changes whenever the state file is replaced."""
        st = self.state_file.stat()
        return st.st_ino, st.st_mtime_ns, st.st_size

    def state(self) -> State:
        data = json.loads(self.state_file.read_text())
        return State(data["generation"], Serving.parse(data["serving"], "the replica's state"), data["source"])

    def publish(self, serving: Serving, source: str) -> int:
        """Make `serving` the state in force (call holding the lock); its generation."""
        generation = self.state().generation + 1
        _write_json(self.state_file, {"generation": generation, "source": source, "serving": serving.as_dict()})
        return generation

    @contextlib.contextmanager
    def lock(self) -> Iterator[bool]:
        """Yield True holding the replica's change lock, or False when another process holds it (no waiting)."""
        with open(self.folder / "lock", "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ------------------------------------------------------------------------------------------ the workers

    def join(self) -> None:
        (self.folder / "workers" / str(self.pid)).touch()

    def leave(self) -> None:
        (self.folder / "workers" / str(self.pid)).unlink(missing_ok=True)
        (self.folder / "acks" / f"{self.pid}.json").unlink(missing_ok=True)

    def ack(self, generation: int, error: str | None = None) -> None:
        _write_json(self.folder / "acks" / f"{self.pid}.json", {"generation": generation, "error": error})

    def workers(self) -> list[int]:
        """The pids of the live workers that joined."""
        with contextlib.suppress(FileNotFoundError):
            return sorted(pid for pid in (int(p.name) for p in (self.folder / "workers").iterdir() if p.name.isdigit())
                          if self.alive(pid))
        return []

    def acks(self) -> dict[int, tuple[int, str | None]]:
        out = {}
        for path in (self.folder / "acks").glob("*.json"):
            with contextlib.suppress(ValueError, OSError):
                data = json.loads(path.read_text())
                out[int(path.stem)] = (data["generation"], data["error"])
        return out

    def pending(self, generation: int) -> tuple[list[int], dict[int, str]]:
        """(live workers that have not applied `generation` yet, {worker: why it refused it})."""
        acks = self.acks()
        waiting, refused = [], {}
        for pid in self.workers():
            applied, error = acks.get(pid, (0, None))
            if applied < generation:
                waiting.append(pid)
            elif applied == generation and error:
                refused[pid] = error
        return waiting, refused

    async def wait_applied(self, generation: int, timeout: float, poll: float = 0.02) -> tuple[list[int], dict[int, str]]:
        """Wait until every live worker has applied or refused `generation` (or `timeout` seconds): what `pending`
        says then."""
        deadline = time.monotonic() + timeout
        while True:
            waiting, refused = self.pending(generation)
            if not waiting or time.monotonic() >= deadline:
                return waiting, refused
            await asyncio.sleep(poll)
