"""Tests for the MNIST training module: data loading, a short real training run, determinism, augmentation, plots."""

import argparse
import json
import os
from pathlib import Path

import artifacts
import artifacts.serving
import pytest
import torch

from training import calibration, mnist
from training.augment import augment
from training.mnist_data import VAL_SIZE, load_mnist, split_indices
from training.mnist_model import MnistFC, Probabilities
from training.plots import save_report


DATA_ROOT = os.environ.get(
    "MNIST_DATA_ROOT", str(Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"))


def make_args(tmp_path, *extra):
    parser = mnist.add_arguments(argparse.ArgumentParser())
    return parser.parse_args(["--data-root", DATA_ROOT, "--no-download", "--out", str(tmp_path / "models"),
                              "--no-export", *extra])


@pytest.fixture(scope="module")
def data():
    return load_mnist(DATA_ROOT, download=False)


def test_load_mnist_shapes_and_md5(data):
    assert data["train_x"].shape == (60000, 28, 28) and data["train_x"].dtype == torch.uint8
    assert data["test_x"].shape == (10000, 28, 28) and data["test_x"].dtype == torch.uint8
    assert data["train_y"].shape == (60000,) and data["test_y"].shape == (10000,)
    assert data["train_y"].dtype == torch.int64
    for y in (data["train_y"], data["test_y"]):
        assert int(y.min()) == 0 and int(y.max()) == 9
        assert torch.bincount(y, minlength=10).min() > 800  # every class is present in bulk
    import torchvision

    expected = {os.path.basename(name): md5 for name, md5 in torchvision.datasets.MNIST.resources}
    for name, md5 in data["md5"].items():
        assert len(md5) == 32
        if name in expected:
            assert md5 == expected[name]
    # The shared folder has both the archives (checked against torchvision's md5s) and the extracted files.
    assert set(expected) <= set(data["md5"])
    assert {"train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"} <= set(data["md5"])


def test_missing_data_gives_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="--data-root"):
        load_mnist(str(tmp_path / "nowhere"), download=False)


def test_split_is_deterministic_and_disjoint():
    train_idx, val_idx = split_indices(60000)
    assert len(train_idx) == 55000 and len(val_idx) == VAL_SIZE == 5000
    assert not set(val_idx.tolist()) & set(train_idx.tolist())
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(60000))
    again_train, again_val = split_indices(60000)
    assert torch.equal(train_idx, again_train) and torch.equal(val_idx, again_val)


def test_model_and_probabilities_shapes():
    torch.manual_seed(0)
    members = [MnistFC((32, 16), dropout=0.1, batchnorm=True) for _ in range(2)]
    x = torch.rand(5, 1, 28, 28)
    assert members[0].eval()(x).shape == (5, 10)
    assert not any(isinstance(m, torch.nn.Conv2d) for m in members[0].modules())
    probs = Probabilities(members).eval()(x)
    assert probs.shape == (5, 10)
    torch.testing.assert_close(probs.sum(1), torch.ones(5))
    expected = (members[0](x).softmax(1) + members[1](x).softmax(1)) / 2
    torch.testing.assert_close(probs, expected)
    single = Probabilities(members[0]).eval()
    torch.testing.assert_close(torch.jit.trace(single, x)(x), single(x))
    torch.testing.assert_close(torch.jit.script(single)(x), single(x))


def test_short_training_run_learns(tmp_path):
    args = make_args(tmp_path, "--limit-train", "6000", "--epochs", "2", "--batch-size", "64",
                     "--hidden", "128", "--threads", "2", "--lr", "3e-3")
    result = mnist.run(args)
    m = result["metrics"]
    assert m["test_accuracy"] > 0.85, m["test_accuracy"]
    assert m["val_accuracy"] > 0.85
    assert len(m["per_class_accuracy"]) == 10
    cm = torch.tensor(m["confusion_matrix"])
    assert cm.shape == (10, 10) and int(cm.sum()) == 10000
    assert torch.equal(cm.sum(1), torch.bincount(result["test_y"], minlength=10))  # rows = true label
    assert abs(cm.trace().item() / 10000 - m["test_accuracy"]) < 1e-6
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    assert result["recipe"]["hidden"] == (128,) and result["recipe"]["limit_train"] == 6000
    assert result["test_x"].dtype == torch.uint8 and result["test_x"].shape == (10000, 28, 28)
    probs = result["module"](torch.rand(3, 1, 28, 28))
    torch.testing.assert_close(probs.sum(1), torch.ones(3))
    assert not (tmp_path / "models").exists()  # run() writes nothing; main() writes the report


def test_same_seed_gives_identical_weights(tmp_path):
    extra = ["--limit-train", "1024", "--max-steps", "12", "--batch-size", "64", "--hidden", "64,32",
             "--threads", "2", "--ensemble", "2", "--elastic-alpha", "20", "--rotate", "10", "--seed", "7"]
    a = mnist.run(make_args(tmp_path, *extra))["module"].state_dict()
    b = mnist.run(make_args(tmp_path, *extra))["module"].state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    c = mnist.run(make_args(tmp_path, *extra[:-1], "8"))["module"].state_dict()
    assert not torch.equal(a["members.0.net.1.weight"], c["members.0.net.1.weight"])


def test_augment_shape_range_identity_and_determinism(data):
    x = data["train_x"][:64].unsqueeze(1).float() / 255
    g = torch.Generator().manual_seed(0)
    same = augment(x, g, rotate=0.0, scale=0.0, translate=0.0, elastic_alpha=0.0)
    torch.testing.assert_close(same, x)
    # Zero-magnitude warps still go through grid_sample: it must reproduce the input.
    tiny = augment(x, g, rotate=1e-9, scale=0.0, translate=0.0, elastic_alpha=1e-9)
    torch.testing.assert_close(tiny, x, atol=1e-5, rtol=0)
    kwargs = dict(rotate=12.0, scale=0.1, translate=2.5, elastic_alpha=34.0, elastic_sigma=5.0)
    warped = augment(x, torch.Generator().manual_seed(1), **kwargs)
    assert warped.shape == x.shape and warped.dtype == torch.float32
    assert warped.min() >= 0 and warped.max() <= 1
    assert (warped - x).abs().mean() > 0.01  # it really changed the digits
    ink = warped.sum((1, 2, 3)) / x.sum((1, 2, 3))  # ±10 % scale alone changes the area by ±21 %
    assert ink.min() > 0.3 and (ink - 1).abs().mean() < 0.25  # but the digits stay on the canvas
    torch.testing.assert_close(augment(x, torch.Generator().manual_seed(1), **kwargs), warped)


def test_save_report_writes_four_pngs(tmp_path, data):
    history = [{"member": 0, "epoch": e, "train_loss": 1 / e, "train_acc": 1 - 0.1 / e, "val_loss": 1.1 / e,
                "val_acc": 1 - 0.12 / e, "lr": 1e-3, "seconds": 1.0} for e in (1, 2, 3)]
    y = data["test_y"][:200]
    predictions = y.clone()
    predictions[:7] = (predictions[:7] + 1) % 10
    cm = torch.bincount(y * 10 + predictions, minlength=100).reshape(10, 10).tolist()
    probs = torch.nn.functional.one_hot(predictions, 10).float() * 0.9 + 0.01
    cal = {"temperature": 0.8, **{k: calibration.reliability(probs, y) for k in ("test_before", "test_after")}}
    paths = save_report(tmp_path / "report", history, cm, data["test_x"][:200], y, probs, cal)
    assert [p.name for p in paths] == ["curves.png", "confusion.png", "misclassified.png", "calibration.png"]
    for p in paths:
        assert p.exists() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000


def test_members_are_cached_and_reused_bit_for_bit(tmp_path):
    extra = ["--limit-train", "512", "--max-steps", "4", "--batch-size", "64", "--hidden", "32",
             "--threads", "2", "--ensemble", "2", "--cache-dir", str(tmp_path / "cache"), "--no-test"]
    first = mnist.run(make_args(tmp_path, *extra))
    assert len(list((tmp_path / "cache").glob("member-*.pt"))) == 2
    again = mnist.run(make_args(tmp_path, *extra, "--ensemble", "3"))  # members 0-1 reused, member 2 trained
    assert len(list((tmp_path / "cache").glob("member-*.pt"))) == 3
    a, b = first["module"].state_dict(), again["module"].state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert "test_accuracy" not in again["metrics"]  # --no-test: the test set was not looked at


def test_a_distilled_student_learns_from_its_teacher(tmp_path):
    args = make_args(tmp_path, "--profile", "distilled", "--limit-train", "2048", "--max-steps", "30",
                     "--hidden", "64", "--threads", "2", "--no-test", "--cache-dir", str(tmp_path / "cache"))
    result = mnist.run(args)
    assert result["recipe"]["teacher"] == "committee" and result["recipe"]["hidden"] == (64,)
    assert result["metrics"]["val_accuracy"] > 0.5
    # the teacher's 3 members were trained (and cached) first, and their time counts in the recipe's cost
    assert len(list((tmp_path / "cache").glob("member-*.pt"))) == 4
    assert result["training_seconds"] > sum(h["seconds"] for h in result["history"])


SERVED = artifacts.serving.default_dir(artifacts.MNIST)


def test_an_exported_teacher_gives_back_the_uncalibrated_average():
    teacher = mnist.ExportedTeacher(SERVED)
    served = torch.jit.load(str(SERVED / "model.pt")).eval()
    meta = json.loads((SERVED / "metadata.json").read_text())
    assert teacher.tag == f"mnist-fc:{meta['version']}" and teacher.temperature == meta["calibration"]["temperature"]
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        raw, cal = teacher(x), served(x)
    torch.testing.assert_close(raw.sum(1), torch.ones(16))
    # calibrating the teacher's output again gives the served answer; the teacher itself is softer
    torch.testing.assert_close(calibration.rescale(raw, teacher.temperature), cal, atol=1e-5, rtol=1e-4)
    assert (raw.max(1).values < cal.max(1).values + 1e-6).all()


def test_a_student_distils_from_an_exported_model_without_training_a_committee(tmp_path):
    args = make_args(tmp_path, "--profile", "distilled", "--limit-train", "1024", "--max-steps", "10",
                     "--hidden", "32", "--threads", "2", "--no-test", "--teacher-model", str(SERVED),
                     "--cache-dir", str(tmp_path / "cache"))
    result = mnist.run(args)
    meta = json.loads((SERVED / "metadata.json").read_text())
    assert result["recipe"]["teacher"] == f"mnist-fc:{meta['version']}"
    assert len(list((tmp_path / "cache").glob("member-*.pt"))) == 1  # the student alone: no committee trained
    assert result["training_seconds"] == sum(h["seconds"] for h in result["history"])


def test_distillation_loss_matches_its_definition():
    torch.manual_seed(0)
    logits, teacher = torch.randn(8, 10), torch.softmax(torch.randn(8, 10), 1)
    labels = torch.randint(0, 10, (8,))
    recipe = {"distill_temperature": 2.0, "distill_alpha": 0.7, "label_smoothing": 0.0}
    from training.fit import distillation_loss

    soft = torch.softmax(teacher.log() / 2, 1)
    kl = (soft * (soft.log() - torch.log_softmax(logits / 2, 1))).sum(1).mean() * 4
    expected = 0.7 * kl + 0.3 * torch.nn.functional.cross_entropy(logits, labels)
    torch.testing.assert_close(distillation_loss(logits, teacher, labels, recipe), expected)


def test_temperature_scaling_recovers_a_known_temperature():
    torch.manual_seed(0)
    true_t = 0.5
    logits = torch.randn(20000, 10) * 2
    labels = torch.distributions.Categorical(logits=logits).sample()  # labels drawn from softmax(logits)
    overconfident = torch.softmax(logits / true_t, 1)  # the model says softmax(logits / 0.5)
    t = calibration.fit_temperature(overconfident, labels)
    assert abs(t - 1 / true_t) < 0.1  # rescaling by T = 2 gives the true probabilities back
    fixed = calibration.rescale(overconfident, t)
    assert calibration.reliability(fixed, labels)["ece"] < calibration.reliability(overconfident, labels)["ece"] / 3
    assert torch.equal(fixed.argmax(1), overconfident.argmax(1))  # accuracy unchanged


def test_calibrated_module_applies_the_temperature():
    torch.manual_seed(0)
    member = MnistFC((16,)).eval()
    module = Probabilities([member]).eval()
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(calibration.Calibrated(module, 0.7)(x), calibration.rescale(module(x), 0.7))
    torch.testing.assert_close(calibration.Calibrated(module, 1.0)(x), module(x))


def test_a_students_cost_includes_its_teacher_named_by_profile_or_by_tag():
    from training.compare import add_teacher_time

    rows = [{"profile": "committee", "tag": "mnist-fc:abc", "teacher": None, "training_minutes": 40.0},
            {"profile": "distilled", "tag": "mnist-fc-distilled:1", "teacher": "mnist-fc:abc", "training_minutes": 25.0},
            {"profile": "distilled", "tag": "mnist-fc-distilled:2", "teacher": "committee", "training_minutes": 20.0},
            {"profile": "quick", "tag": "mnist-fc:q", "teacher": None, "training_minutes": 1.0}]
    assert [r["training_minutes"] for r in add_teacher_time(rows)] == [40.0, 65.0, 60.0, 1.0]


def test_members_trained_in_separate_processes_are_found_by_the_full_run(tmp_path):
    """--member N trains member N alone into the cache (what training/on_gpu.sh runs in parallel); the run
    without --member then trains nothing and gives the same committee as one run training both."""
    extra = ["--limit-train", "512", "--max-steps", "4", "--batch-size", "64", "--hidden", "32",
             "--threads", "2", "--ensemble", "2", "--no-test"]
    cache = ["--cache-dir", str(tmp_path / "cache")]
    for member in (1, 0):
        only = mnist.run(make_args(tmp_path, *extra, *cache, "--member", str(member)))
        assert only["member_only"] == member and "module" not in only
    assert len(list((tmp_path / "cache").glob("member-*.pt"))) == 2
    assembled = mnist.run(make_args(tmp_path, *extra, *cache))
    assert all(h["seconds"] >= 0 for h in assembled["history"])
    together = mnist.run(make_args(tmp_path, *extra))
    a, b = assembled["module"].state_dict(), together["module"].state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_member_needs_a_cache_dir(tmp_path):
    with pytest.raises(SystemExit, match="--cache-dir"):
        mnist.main(make_args(tmp_path, "--member", "0"))


def test_the_training_device_is_part_of_the_recipe_and_of_the_member_key(tmp_path):
    from training.fit import member_key

    recipe = mnist.resolve_recipe(make_args(tmp_path, "--device", "cpu"))
    assert recipe["device"] == "cpu"
    # a member trained on a GPU is another network (other kernels): never mistaken for the CPU's in the cache
    assert member_key(recipe, 0) != member_key({**recipe, "device": "cuda"}, 0)


def test_augmentation_draws_on_the_generators_device(data):
    x = data["train_x"][:8].unsqueeze(1).float() / 255
    g = torch.Generator("cpu").manual_seed(3)
    out = augment(x, g, rotate=10, elastic_alpha=20)
    assert out.device == x.device and out.shape == x.shape
    assert not torch.equal(out, augment(x, g, rotate=10, elastic_alpha=20))  # the generator moved on
