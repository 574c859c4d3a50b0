"""A worker's model versions: it loads what the replica's serving state names, hands the data plane its routes, and makes model changes, in every worker of the replica, without a restart.

Where a change comes from:

* the v2 protocol's model repository extension (Triton's): ``index``, ``load(name, parameters)``,
  ``unload(name, parameters)``, over HTTP (service/v2/repository_rest.py) and gRPC (service/v2/grpc_service.py);
* the serving file (artifacts.serving), re-read when it changes on disk; its new state replaces whatever load and
  unload had changed.

How a change reaches every worker (service/replica.py): the worker that takes it holds the replica's lock (a second
change meanwhile gets 409), loads and probes every version the new state adds (a version that fails its checksums,
its spec or its probe prediction is refused, 400, and nothing changes), publishes the state as the next generation,
applies it, and answers only once every live worker has applied it too. Each worker watches the state file
(``POLL_S``) and applies a new generation: it loads what it lacks in a thread, then swaps its routes whole, so a
request sees one state from start to end; a version taken out of service finishes the requests it holds first. A
worker that cannot apply a generation keeps serving what it served and says why; the changing worker then publishes
the previous state again and answers 409 with the reason.

What ``load`` takes: no parameter: the model as the serving file declares it now. ``config``: a JSON object of the
serving file's shape for this one model (``{"default": v, "canary": {"version": v, "weight": w}, "shadow":
{"version": v, "share": s}, "versions": [v, ...]}``), which replaces its running roles whole. ``unload``: the whole
model (refused for a task's default model: the typed endpoints answer with it), or, with the parameter
``version``, that version's roles (refused for the default version). Changes made this way last until the replica
stops or the serving file changes: to keep one, write it to the serving file (``python -m training promote``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any, Callable

import artifacts
import artifacts.serving as serving_file
from artifacts.serving import ModelServing, Serving
from service.core.errors import Kind, ServingError, fail, short
from service.core.plane import DataPlane
from service.core.routing import Route
from service.inference import versions
from service.inference.versions import Observer, Version
from service.replica import Replica, State
from service.settings import Settings

log = logging.getLogger("bentoml.service.thermodigits")

POLL_S = 0.1  # how often a worker looks for a new state and a changed serving file
APPLY_TIMEOUT_S = 60.0  # how long a change waits for every worker to apply it
READY, UNAVAILABLE = "READY", "UNAVAILABLE"
LOAD_PARAMETERS = ("config",)
UNLOAD_PARAMETERS = ("version", "unload_dependents")


class Repository:
    """This worker's loaded versions and the model changes it makes or follows."""

    def __init__(self, plane: DataPlane, replica: Replica, settings: Settings, device: str, serving_path: Path,
                 observers: list[Observer] | None = None, root: Path = artifacts.MODELS_DIR,
                 on_retire: list[Callable[[Version], None]] | None = None):
        self.plane = plane
        self.replica = replica
        self.settings = settings
        self.device = device
        self.serving_path = Path(serving_path)
        self.observers = list(observers or ())
        self.on_retire = list(on_retire or ())
        self.root = root
        self.loaded: dict[tuple[str, str], Version] = {}
        self.generation = 0
        self.serving: Serving | None = None
        self.state_stamp: tuple | None = None
        self.file_stamp = self._file_stamp()
        self.mutex = asyncio.Lock()  # one state change at a time in this worker (the watcher's or a call's)

    # ----------------------------------------------------------------------------------------- applying states

    def start(self) -> None:
        """Load the replica's state and serve it (at the worker's start; raises when a version cannot load)."""
        self.state_stamp = self.replica.stamp()
        state = self.replica.state()
        for name, version in self._missing(state.serving):
            self._load(name, version)
        self._swap(state)
        self.replica.join()
        self.replica.ack(state.generation)

    def _missing(self, serving: Serving) -> list[tuple[str, str]]:
        return [(name, v) for name, entry in serving.models.items() for v in entry.served()
                if (name, v) not in self.loaded]

    def _load(self, name: str, version: str) -> Version:
        """Load and probe one version (ArtifactError naming what is wrong); kept once it passes."""
        model = artifacts.model(name)
        path = artifacts.locate(name, version, self.settings.backend, self.root)
        loaded = versions.load(model, path, self.settings, self.device, self.observers)
        try:
            if loaded.version != version:
                raise artifacts.ArtifactError(f"{path}: holds version {loaded.version}, not {version}")
            versions.probe(loaded)
        except artifacts.ArtifactError:
            loaded.close()
            raise
        self.loaded[(name, version)] = loaded
        return loaded

    async def _prepare(self, serving: Serving) -> None:
        """Load (in a thread) every version `serving` names that this worker lacks; ArtifactError when one fails."""
        for name, version in self._missing(serving):
            await asyncio.to_thread(self._load, name, version)

    def _swap(self, state: State) -> None:
        """Serve `state` (every version it names is loaded): new routes whole, the versions it drops retired."""
        routes = {}
        for name, entry in state.serving.models.items():
            named = {v: self.loaded[(name, v)] for v in entry.served()}
            routes[name] = Route(name, named[entry.default], named,
                                 canary=named[entry.canary.version] if entry.canary else None,
                                 weight=entry.canary.weight if entry.canary else 0.0,
                                 shadow=named[entry.shadow.version] if entry.shadow else None,
                                 share=entry.shadow.share if entry.shadow else 0.0)
        self.plane.routes = routes
        for key in [k for k in self.loaded if k[0] not in state.serving.models
                    or k[1] not in state.serving.models[k[0]].served()]:
            retired = self.loaded.pop(key)
            retired.retire()
            for callback in self.on_retire:
                callback(retired)
        self.serving, self.generation = state.serving, state.generation

    async def _apply(self, state: State) -> None:
        """Load what `state` needs, serve it and acknowledge it; or keep serving what served and say why."""
        try:
            await self._prepare(state.serving)
        except (artifacts.ArtifactError, OSError) as e:
            log.error("model change %d refused in this worker, which keeps serving what it served: %s",
                      state.generation, e)
            self.generation = state.generation
            self.replica.ack(state.generation, str(e))
            return
        self._swap(state)
        self.replica.ack(state.generation)
        log.info("serving model state %d: %s", state.generation, self.describe())

    async def sync(self) -> None:
        """Apply the replica's state if a newer generation has been published."""
        async with self.mutex:
            await self._sync()

    async def _sync(self) -> None:
        stamp = self.replica.stamp()
        if stamp == self.state_stamp:
            return
        self.state_stamp = stamp
        state = self.replica.state()
        if state.generation > self.generation:
            await self._apply(state)

    async def watch(self) -> None:
        """Follow the replica's state and the serving file for as long as the worker runs."""
        while True:
            await asyncio.sleep(POLL_S)
            try:
                await self.sync()
                await self.follow_serving_file()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("following the model state failed; trying again")

    def describe(self) -> str:
        routes = self.plane.routes or {}
        return "; ".join(f"{name} {route.describe()}" for name, route in routes.items())

    # ----------------------------------------------------------------------------------------- changing

    async def change(self, new: Serving, source: str | None = None) -> None:
        """Make `new` the state of every worker of the replica, or raise ServingError and change nothing."""
        with self.replica.lock() as held:
            if not held:
                fail("another model change is in progress on this server; retry once it is done", Kind.CONFLICT)
            async with self.mutex:
                await self._change(new, source)

    async def _change(self, new: Serving, source: str | None) -> None:
        await self._sync()  # a change that another worker finished just now
        current = self.replica.state()
        try:
            await self._prepare(new)
        except artifacts.ArtifactError as e:
            fail(f"refused, nothing changed: {e}", Kind.INVALID)
        generation = self.replica.publish(new, current.source if source is None else source)
        await self._apply(State(generation, new, current.source if source is None else source))
        waiting, refused = await self.replica.wait_applied(generation, APPLY_TIMEOUT_S)
        if refused:
            back = self.replica.publish(current.serving, current.source)
            await self._apply(State(back, current.serving, current.source))
            await self.replica.wait_applied(back, APPLY_TIMEOUT_S)
            reasons = "; ".join(f"worker {pid}: {why}" for pid, why in sorted(refused.items()))
            fail(f"undone, what served before serves again: not every worker could apply it ({reasons})",
                 Kind.CONFLICT)
        if waiting:
            fail(f"published, but workers {', '.join(map(str, waiting))} had not applied it after "
                 f"{APPLY_TIMEOUT_S:g} s; they apply it when they can", Kind.DEADLINE)
        self.state_stamp = self.replica.stamp()

    def _file_stamp(self) -> tuple | None:
        try:
            st = self.serving_path.stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    async def follow_serving_file(self) -> None:
        """When the serving file has changed on disk: make its state the replica's (once, by whichever worker sees it
        first); a file that cannot serve is logged and what served keeps serving."""
        stamp = self._file_stamp()
        if stamp is None or stamp == self.file_stamp:
            return
        try:
            new = serving_file.read(self.serving_path)
        except artifacts.ArtifactError as e:
            self.file_stamp = stamp
            log.error("the serving file changed but cannot be read; what served keeps serving: %s", e)
            return
        if new.digest() == self.replica.state().source:
            self.file_stamp = stamp
            return
        try:
            await self.change(new, new.digest())
        except ServingError as e:
            if e.kind is Kind.CONFLICT and "in progress" in str(e):
                return  # another worker is changing the state: look again at the next poll
            log.error("the serving file changed but cannot serve; what served keeps serving: %s", e)
        self.file_stamp = stamp
        log.info("the serving file changed: serving %s", self.describe())

    # ----------------------------------------------------------------------------------------- the extension

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Every version of every model this server has (committed folders and the model store), with its state."""
        routes = self.plane.routes or {}
        entries = []
        for m in artifacts.MODELS:
            route = routes.get(m.name)
            roles = route.roles() if route else {}
            available = set(artifacts.folder_versions(m.name, self.root)) | set(
                artifacts.store_versions(m.name, self.settings.backend))
            for version in sorted(available | set(roles)):
                state = READY if version in roles else UNAVAILABLE
                if ready_only and state != READY:
                    continue
                entries.append({"name": m.name, "version": version, "state": state,
                                "reason": ", ".join(roles.get(version, [])) if state == READY else "not loaded"})
        return entries

    def _model(self, name: str) -> artifacts.Model:
        try:
            return artifacts.model(name)
        except KeyError:
            fail(f"no model named {short(name)}; the models are {', '.join(artifacts.MODEL_NAMES)}", Kind.NOT_FOUND)

    def _check_parameters(self, parameters: dict[str, Any], known: tuple[str, ...]) -> None:
        files = [k for k in parameters if k.startswith("file:")]
        if files:
            fail("files are not accepted: this server loads versions from its model store and models/ folder "
                 "(publish a version with `python -m training`, then name it in config)")
        unknown = sorted(set(parameters) - set(known))
        if unknown:
            fail(f"parameters: {short(unknown[0])} is not one this call takes; it takes {', '.join(known)}")

    def _check_exists(self, name: str, entry: ModelServing) -> None:
        available = set(artifacts.folder_versions(name, self.root)) | set(
            artifacts.store_versions(name, self.settings.backend))
        for version in entry.served():
            if version not in available:
                fail(f"model {name!r} has no version {version} in this server's repository; it has "
                     f"{', '.join(sorted(available)) or 'none'}", Kind.NOT_FOUND)

    async def load(self, name: str, parameters: dict[str, Any]) -> None:
        """Serve `name` as `parameters["config"]` says (the serving file's entry without it) in every worker."""
        self._model(name)
        self._check_parameters(parameters, LOAD_PARAMETERS)
        config = parameters.get("config")
        try:
            if config is None:
                declared = serving_file.read(self.serving_path).models.get(name)
                if declared is None:
                    fail(f"the serving file names no version of {name}: send one in the config parameter, e.g. "
                         '{"default": "<version>"}')
                entry = declared
            else:
                if not isinstance(config, (str, bytes)):
                    fail('parameters.config: expected a JSON object as a string, e.g. {"default": "<version>"}')
                try:
                    data = json.loads(config)
                except ValueError as e:
                    fail(f"parameters.config is not JSON ({e})")
                entry = ModelServing.parse(data, "parameters.config")
            self._check_exists(name, entry)
            current = self.replica.state().serving
            new = current.with_model(name, entry)
        except artifacts.ArtifactError as e:
            fail(str(e))
        await self.change(new)

    async def unload(self, name: str, parameters: dict[str, Any]) -> None:
        """Stop serving `name`, or one version's roles (`parameters["version"]`), in every worker."""
        self._model(name)
        self._check_parameters(parameters, UNLOAD_PARAMETERS)
        version = parameters.get("version")
        current = self.replica.state().serving
        entry = current.models.get(name)
        if entry is None:
            fail(f"model {name!r} is not loaded", Kind.NOT_FOUND)
        try:
            if version is None:
                new = current.with_model(name, None)
            else:
                if version not in entry.served():
                    fail(f"model {name!r} has no version {short(version)} loaded; it serves "
                         f"{', '.join(entry.served())}", Kind.NOT_FOUND)
                new = current.with_model(name, entry.without(version))
        except artifacts.ArtifactError as e:
            fail(f"refused, nothing changed: {e}", Kind.CONFLICT)
        await self.change(new)
