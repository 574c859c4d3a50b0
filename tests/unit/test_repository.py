"""service/repository.py and service/replica.py: model changes reach every worker of a replica before the call answers; mistaken and hostile changes are refused and change nothing.

Two workers are simulated in one process: two Repository objects on one replica folder, each with a pid of its own,
each following the replica's state in a task of its own (as a worker's watcher does), on one event loop.
"""

import asyncio
import json
import shutil

import numpy as np
import pytest

import artifacts
import artifacts.serving
from artifacts.serving import ModelServing, Serving
from service.core.errors import Kind, ServingError
from service.core.plane import DataPlane
from service.replica import Replica
from service.repository import Repository
from service.settings import Settings
from testkit.wait import wait_until_async

LINEAR = artifacts.TEMPERATURE_LINEAR  # the temperature task's default model
MLP = artifacts.TEMPERATURE_MLP  # the model whose versions are switched
COMMITTED = artifacts.serving.read()
OLD = COMMITTED.models[MLP].default
NEW = next(v for v in artifacts.folder_versions(MLP) if v != OLD)  # a second committed version
THERMOMETERS = Serving({name: COMMITTED.models[name] for name in (LINEAR, artifacts.TEMPERATURE_MLP)} |
                       {artifacts.MNIST: COMMITTED.models[artifacts.MNIST]})
WORKERS = (1001, 1002)


class Workers:
    """Two workers' repositories on one replica, their watchers running while the block runs."""

    def __init__(self, tmp_path, serving: Serving = THERMOMETERS, root=artifacts.MODELS_DIR):
        self.serving_file = tmp_path / "serving.json"
        artifacts.serving.write(serving, self.serving_file)
        folder = Replica.create(serving, serving.digest(), str(tmp_path)).folder
        self.repos = []
        for pid in WORKERS:
            replica = Replica(folder, pid=pid, alive=lambda p: p in WORKERS)
            repo = Repository(DataPlane(), replica, Settings(), "cpu", self.serving_file, root=root)
            repo.start()
            self.repos.append(repo)

    async def __aenter__(self) -> "Workers":
        self.tasks = [asyncio.create_task(r.watch()) for r in self.repos]
        return self

    async def __aexit__(self, *exc) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def defaults(self, name: str = MLP) -> list[str]:
        return [r.plane.routes[name].default.version for r in self.repos]


def run(coroutine):
    return asyncio.run(coroutine)


def config(**entry) -> dict:
    return {"config": json.dumps(entry)}


def test_both_versions_are_committed_and_differ():
    assert OLD != NEW and artifacts.verify(artifacts.version_dir(MLP, NEW), only=("model.onnx",))


def test_a_load_switches_every_worker_before_it_answers(tmp_path):
    async def go():
        async with Workers(tmp_path) as w:
            assert w.defaults() == [OLD, OLD]
            await w.repos[0].load(MLP, config(default=NEW, versions=[OLD]))
            after = w.defaults()  # read at once: the call answered only once both had applied it
            _, y_new = await w.repos[1].plane.predict(MLP, None, np.array([[35.7]]))
            _, y_old = await w.repos[1].plane.predict(MLP, OLD, np.array([[35.7]]))
            await w.repos[1].load(MLP, config(default=OLD))  # back, through the other worker
            return after, w.defaults(), y_new, y_old, [sorted(r.plane.routes[MLP].versions) for r in w.repos]

    after, back, y_new, y_old, loaded = run(go())
    assert after == [NEW, NEW] and back == [OLD, OLD]
    assert y_new[0, 0] != y_old[0, 0]  # two models side by side, each answering with its own weights
    assert loaded == [[OLD], [OLD]]  # the version no longer named was unloaded in both


@pytest.mark.parametrize("name,parameters,kind,fragment", [
    ("resnet", {}, Kind.NOT_FOUND, "no model named 'resnet'"),
    (MLP, config(default="f" * 16), Kind.NOT_FOUND, f"has no version {'f' * 16} in this server's repository"),
    (MLP, config(default="1"), Kind.INVALID, "is not a version"),
    (MLP, config(default=OLD, canary={"version": NEW, "weight": 2}), Kind.INVALID, "weight: expected a number"),
    (MLP, {"config": "{not json"}, Kind.INVALID, "parameters.config is not JSON"),
    (MLP, {"config": 7}, Kind.INVALID, "expected a JSON object as a string"),
    (MLP, {"file:1/model.onnx": "AAAA"}, Kind.INVALID, "files are not accepted"),
    (MLP, {"colour": "red"}, Kind.INVALID, "'colour' is not one this call takes"),
    # a version of another model (and task): not in this model's repository
    (MLP, config(default=COMMITTED.models[artifacts.MNIST].default), Kind.NOT_FOUND, "has no version"),
])
def test_a_mistaken_load_is_refused_and_changes_nothing(tmp_path, name, parameters, kind, fragment):
    async def go():
        async with Workers(tmp_path) as w:
            state = w.repos[0].replica.state()
            with pytest.raises(ServingError) as e:
                await w.repos[0].load(name, parameters)
            return e.value, state, w.repos[0].replica.state(), w.defaults()

    error, before, after, defaults = run(go())
    assert error.kind is kind and fragment in str(error), str(error)
    assert after == before and defaults == [OLD, OLD]


@pytest.mark.parametrize("name,parameters,kind,fragment", [
    (LINEAR, {}, Kind.CONFLICT, "temperature-linear is the default model of the temperature task"),
    (MLP, {"version": OLD}, Kind.CONFLICT, "is the default version: load another default first"),
    (MLP, {"version": NEW}, Kind.NOT_FOUND, "has no version"),
    (artifacts.MNIST_DISTILLED, {}, Kind.NOT_FOUND, "is not loaded"),
])
def test_a_mistaken_unload_is_refused_and_changes_nothing(tmp_path, name, parameters, kind, fragment):
    async def go():
        async with Workers(tmp_path) as w:
            with pytest.raises(ServingError) as e:
                await w.repos[0].unload(name, parameters)
            return e.value, w.repos[0].replica.state().generation

    error, generation = run(go())
    assert error.kind is kind and fragment in str(error), str(error)
    assert generation == 1


def test_unload_takes_a_model_or_a_version_out_of_every_worker(tmp_path):
    async def go():
        async with Workers(tmp_path) as w:
            await w.repos[0].load(MLP, config(default=OLD, canary={"version": NEW, "weight": 0.5}))
            assert [r.plane.routes[MLP].canary.version for r in w.repos] == [NEW, NEW]
            await w.repos[1].unload(MLP, {"version": NEW, "unload_dependents": False})
            canaries = [r.plane.routes[MLP].canary for r in w.repos]
            await w.repos[0].unload(MLP, {})
            return canaries, [MLP in r.plane.routes for r in w.repos]

    canaries, mlp = run(go())
    assert canaries == [None, None] and mlp == [False, False]


def test_a_second_change_while_one_is_under_way_gets_409(tmp_path):
    async def go():
        async with Workers(tmp_path) as w:
            with w.repos[1].replica.lock() as held:  # another worker is changing the state
                assert held
                with pytest.raises(ServingError) as e:
                    await w.repos[0].load(MLP, config(default=NEW))
            return e.value

    error = run(go())
    assert error.kind is Kind.CONFLICT and "another model change is in progress" in str(error)


def test_a_broken_version_is_refused_and_what_served_keeps_serving(tmp_path):
    root = tmp_path / "models"
    for name in THERMOMETERS.models:
        version = THERMOMETERS.models[name].default
        shutil.copytree(artifacts.version_dir(name, version), root / name / version)
    broken = "0" * 16  # a version only this folder has (the model store holds the committed ones)
    shutil.copytree(artifacts.version_dir(MLP, NEW), root / MLP / broken)
    metadata = artifacts.read_metadata(root / MLP / broken)
    artifacts.write_metadata(root / MLP / broken, {**metadata, "version": broken})  # not its files' checksums

    async def go():
        async with Workers(tmp_path, root=root) as w:
            with pytest.raises(ServingError) as e:
                await w.repos[0].load(MLP, config(default=broken))
            _, y = await w.repos[1].plane.predict(MLP, None, np.array([[35.7]]))
            return e.value, w.defaults(), w.repos[0].replica.state().generation, y

    error, defaults, generation, y = run(go())
    assert error.kind is Kind.INVALID and "refused, nothing changed" in str(error)
    assert "version does not match the file checksums" in str(error)
    assert defaults == [OLD, OLD] and generation == 1 and np.isfinite(y).all()


def test_a_worker_that_cannot_apply_a_change_has_it_undone_everywhere(tmp_path):
    async def go():
        async with Workers(tmp_path) as w:
            def fail(name, version):
                raise artifacts.ArtifactError("out of memory (simulated)")

            w.repos[1]._load = fail
            with pytest.raises(ServingError) as e:
                await w.repos[0].load(MLP, config(default=NEW))
            return e.value, w.defaults(), w.repos[0].replica.state().serving.models[MLP].default

    error, defaults, state = run(go())
    assert error.kind is Kind.CONFLICT and "undone" in str(error) and "out of memory (simulated)" in str(error)
    assert defaults == [OLD, OLD] and state == OLD


def test_an_edited_serving_file_reaches_every_worker_and_a_broken_one_changes_nothing(tmp_path):
    async def go():
        async with Workers(tmp_path) as w:
            edited = THERMOMETERS.with_model(MLP, ModelServing(NEW))
            artifacts.serving.write(edited, w.serving_file)
            await wait_until_async(lambda: w.defaults() == [NEW, NEW], message=lambda: f"defaults {w.defaults()}")
            switched = w.defaults()
            w.serving_file.write_text('{"models": {}}')  # names no default of a task: refused
            generation = w.repos[0].replica.state().generation
            for _ in range(20):  # several polls of both watchers
                await w.repos[0].follow_serving_file()
                await w.repos[1].follow_serving_file()
            return switched, w.defaults(), generation, w.repos[0].replica.state().generation

    switched, after, generation, later = run(go())
    assert switched == [NEW, NEW] and after == [NEW, NEW] and later == generation


def test_the_index_lists_every_version_with_its_state(tmp_path):
    async def go():
        async with Workers(tmp_path) as w:
            await w.repos[0].load(MLP, config(default=OLD, shadow={"version": NEW, "share": 1.0}))
            return w.repos[1].index(), w.repos[1].index(ready_only=True)

    index, ready = run(go())
    mlp = {e["version"]: (e["state"], e["reason"]) for e in index if e["name"] == MLP}
    assert mlp[OLD] == ("READY", "default") and mlp[NEW] == ("READY", "shadow")
    distilled = [e for e in index if e["name"] == artifacts.MNIST_DISTILLED]
    assert distilled and all(e["state"] == "UNAVAILABLE" and e["reason"] == "not loaded" for e in distilled)
    assert all(e["state"] == "READY" for e in ready) and len(ready) < len(index)


def test_a_worker_joins_the_replica_its_environment_names_and_any_other_process_makes_its_own(monkeypatch):
    from service.replica import ENV

    before, made = Replica.for_process(THERMOMETERS, THERMOMETERS.digest(), worker=False)  # as a test process
    try:
        # a server this process starts is no worker of it: it makes its own, whatever the environment says
        other, made_other = Replica.for_process(THERMOMETERS, THERMOMETERS.digest(), worker=False)
        assert made_other and other.folder != before.folder
        joined, made_joined = Replica.for_process(THERMOMETERS, THERMOMETERS.digest(), worker=True)
        assert joined.folder == other.folder and not made_joined  # its workers join it
        other.remove()
        monkeypatch.delenv(ENV)
        with pytest.raises(RuntimeError, match="this worker's replica folder is missing"):
            Replica.for_process(THERMOMETERS, THERMOMETERS.digest(), worker=True)
    finally:
        before.remove()
