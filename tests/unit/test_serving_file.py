"""artifacts/serving.py: the committed serving file, every mistake in one refused with a message naming it, atomic writes, and the changes the model repository makes to a state."""

import json

import pytest

import artifacts
import artifacts.serving as serving
from artifacts.serving import Canary, ModelServing, Serving, Shadow

A, B, C = "a" * 16, "b" * 16, "c" * 16
DEFAULTS = {"temperature-linear": {"default": A}, "mnist-fc": {"default": B}}


def test_the_committed_file_names_a_committed_version_of_every_model():
    committed = serving.read()
    assert set(committed.models) == set(artifacts.MODEL_NAMES)
    for name, entry in committed.models.items():
        for version in entry.served():
            artifacts.verify(artifacts.version_dir(name, version), only=("model.onnx",))  # present, checksums right
    assert serving.default_dir(artifacts.MNIST) == artifacts.version_dir(artifacts.MNIST, committed.models["mnist-fc"].default)


def test_roles_round_trip_and_served_lists_each_version_once_default_first():
    entry = ModelServing(A, Canary(B, 0.1), Shadow(C, 0.5), (B, C))
    assert entry.served() == [A, B, C]
    parsed = Serving.parse({"models": {**DEFAULTS, "mnist-fc": entry.as_dict()}})
    assert parsed.models["mnist-fc"] == entry
    assert json.loads(parsed.dumps()) == parsed.as_dict()
    assert Serving.parse(json.loads(parsed.dumps())).digest() == parsed.digest()


@pytest.mark.parametrize("models,message", [
    ({"resnet": {"default": A}}, "no model named 'resnet'"),
    ({"temperature-linear": {"default": A}}, "names no version of mnist-fc, the default model of the digits task"),
    ({**DEFAULTS, "mnist-fc": {"default": "v1"}}, "models.mnist-fc.default: 'v1' is not a version"),
    ({**DEFAULTS, "mnist-fc": {"canary": {"version": A, "weight": 0.1}}}, "models.mnist-fc: names no default version"),
    ({**DEFAULTS, "mnist-fc": {"default": B, "canary": {"version": A, "weight": 1.5}}}, "canary.weight: expected a number from 0 to 1"),
    ({**DEFAULTS, "mnist-fc": {"default": B, "canary": {"version": B, "weight": 0.1}}}, "the canary is the default version"),
    ({**DEFAULTS, "mnist-fc": {"default": B, "canary": {"version": A}}}, "canary: expected"),
    ({**DEFAULTS, "mnist-fc": {"default": B, "shadow": {"version": B}}}, "the shadow is the default version"),
    ({**DEFAULTS, "mnist-fc": {"default": B, "shadow": {"version": A, "share": True}}}, "shadow.share: expected a number"),
    ({**DEFAULTS, "mnist-fc": {"default": B, "versions": A}}, "versions: expected a list"),
    ({**DEFAULTS, "mnist-fc": {"default": B, "weight": 1}}, "unknown field 'weight'"),
    ({**DEFAULTS, "mnist-fc": "b" * 16}, "expected an object with a default version"),
])
def test_a_mistake_is_refused_naming_where_it_is(models, message):
    with pytest.raises(artifacts.ArtifactError) as e:
        Serving.parse({"models": models}, "serving.json")
    assert message in str(e.value) and str(e.value).startswith("serving.json"), str(e.value)


def test_not_json_and_a_missing_file_are_refused(tmp_path):
    (tmp_path / "s.json").write_text("{")
    with pytest.raises(artifacts.ArtifactError, match="not JSON"):
        serving.read(tmp_path / "s.json")
    with pytest.raises(artifacts.ArtifactError, match="cannot be read"):
        serving.read(tmp_path / "missing.json")


def test_write_replaces_the_file_whole_and_readable(tmp_path):
    path = tmp_path / "serving.json"
    first = Serving.parse({"models": DEFAULTS})
    serving.write(first, path)
    second = first.with_model("mnist-fc", ModelServing(C))
    serving.write(second, path)
    assert serving.read(path) == second and [p.name for p in tmp_path.iterdir()] == ["serving.json"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_tasks_default_model_cannot_be_left_unserved_and_the_default_version_not_dropped():
    state = Serving.parse({"models": {**DEFAULTS, "mnist-fc-distilled": {"default": C}}})
    assert "mnist-fc-distilled" not in state.with_model("mnist-fc-distilled", None).models
    with pytest.raises(artifacts.ArtifactError, match="mnist-fc is the default model of the digits task"):
        state.with_model("mnist-fc", None)
    entry = ModelServing(A, Canary(B, 0.1), Shadow(C), (B,))
    assert entry.without(B) == ModelServing(A, None, Shadow(C))
    with pytest.raises(artifacts.ArtifactError, match="is the default version"):
        entry.without(A)
