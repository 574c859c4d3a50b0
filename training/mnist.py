"""Train a fully connected MNIST classifier (one network, a committee, or a distilled student) and report its metrics.

    python -m training mnist --profile quick --data-root ../shared/data/mnist
    python -m training mnist --profile quick --data-root ../shared/data/mnist --out models   # and a version folder
    python -m training mnist --profile deep --device cuda --member 0 --cache-dir build/members   # one GPU process

Everything is selected on the 5,000-image validation split; the test set is looked at once, at the end
(unless --no-test, for trials). The finished model is calibrated (temperature scaling fitted on
validation data) when that lowers the validation calibration error, then published as a new version to the
BentoML model store; with --out it is also placed, with its report (plots), in <out>/<name>/<version>/.
Nothing serves it until `python -m training promote <name> <version>`.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.nn as nn

import artifacts
from training import calibration, distributed
from training.fit import fit_member, test
from training.mnist_data import DEFAULT_DATA_ROOT, SPLIT_SEED, VAL_SIZE, load_mnist, split_indices, to_float
from training.mnist_model import Probabilities

# The recipes; any flag given on the command line overrides the profile's value. docs/mnist.md compares them.
PROFILES = {
    # ~30-40 s on 2 idle cores, ~99.0 % test. Mild affine augmentation beats a wider net at equal time:
    # 512-512 with shifts/rotations gets ~99.0 % in 10 epochs, 1024-1024 without gets ~98.6 %.
    "quick": dict(epochs=10, batch_size=256, lr=3e-3, hidden=(512, 512), dropout=0.15, batchnorm=True,
                  weight_decay=0.0, label_smoothing=0.05, ensemble=1,
                  rotate=8.0, scale=0.08, translate=2.0, elastic_alpha=0.0, elastic_sigma=5.0),
    # 3 wide nets trained on affine + elastic distortions (Simard et al. 2003), softmax-averaged. At 15 epochs
    # elastic and affine-only tie on validation accuracy (98.98 vs 99.00 %) but elastic gives a lower validation
    # loss (0.065 vs 0.078) and still underfits, so it gains more from a long schedule: 140 epochs took the
    # committee from 99.40 % (70 epochs) to 99.54 % on validation (~65 min on 2 cores).
    "committee": dict(epochs=140, batch_size=256, lr=2e-3, hidden=(1536, 1536), dropout=0.15, batchnorm=True,
                      weight_decay=1e-4, label_smoothing=0.05, ensemble=3,
                      rotate=12.0, scale=0.1, translate=2.5, elastic_alpha=34.0, elastic_sigma=5.0),
    # One network trained on the committee's softened probabilities of the same warped batches (Hinton et al.
    # 2015): the committee's members come from the member cache when it has them (--cache-dir).
    "distilled": dict(epochs=70, batch_size=256, lr=2e-3, hidden=(1536, 1536), dropout=0.1, batchnorm=True,
                      weight_decay=1e-4, label_smoothing=0.0, ensemble=1,
                      rotate=12.0, scale=0.1, translate=2.5, elastic_alpha=34.0, elastic_sigma=5.0,
                      teacher="committee", distill_alpha=0.9, distill_temperature=3.0),
    # GPU recipes (a few minutes on one GPU, days on 2 cores; docs/mnist.md, training/on_gpu.sh). "deep": a
    # committee of Cireşan et al. 2010's 784-2500-2000-1500-1000-500-10, too costly to serve (5 x 12 M
    # parameters), trained to teach. "distilled-deep": one 1536-1536 network (a third of the served committee's
    # cost) distilled from it.
    "deep": dict(epochs=70, batch_size=256, lr=2e-3, hidden=(2500, 2000, 1500, 1000, 500), dropout=0.1,
                 batchnorm=True, weight_decay=1e-4, label_smoothing=0.05, ensemble=5,
                 rotate=12.0, scale=0.1, translate=2.5, elastic_alpha=34.0, elastic_sigma=5.0),
    "distilled-deep": dict(epochs=60, batch_size=256, lr=2e-3, hidden=(1536, 1536), dropout=0.1, batchnorm=True,
                           weight_decay=1e-4, label_smoothing=0.0, ensemble=1,
                           rotate=12.0, scale=0.1, translate=2.5, elastic_alpha=34.0, elastic_sigma=5.0,
                           teacher="deep", distill_alpha=0.9, distill_temperature=3.0),
}


def resolve_recipe(args, profile: str | None = None) -> dict:
    """The profile's hyper-parameters with every explicitly given flag applied on top (not to a teacher's)."""
    profile = profile or args.profile
    recipe = dict(PROFILES[profile], profile=profile, seed=args.seed)
    recipe.setdefault("teacher", None)
    if profile == args.profile:
        for key in PROFILES[profile]:
            value = getattr(args, key, None)
            if value is not None:
                recipe[key] = value
    recipe["hidden"] = tuple(recipe["hidden"])
    recipe["world_size"] = distributed.world_size()
    recipe["threads"] = args.threads or max(1, (os.cpu_count() or 1) // recipe["world_size"])
    recipe["limit_train"], recipe["max_steps"] = args.limit_train, args.max_steps
    recipe["val_size"], recipe["split_seed"] = VAL_SIZE, SPLIT_SEED
    recipe["device"] = args.device
    if profile == args.profile and args.teacher_model and recipe["teacher"]:
        # The teacher is the exported model (name:version), which is also what keys the member cache.
        recipe["teacher"] = artifacts.model_id(artifacts.read_metadata(args.teacher_model))
    return recipe


class ExportedTeacher(nn.Module):
    """An exported MNIST model (TorchScript) as a teacher: its probabilities with its calibration undone.

    The distillation temperature softens the teacher's own average; an exported model has already been
    sharpened by its fitted temperature T, and p_cal^T, renormalised, is exactly that average again.
    """

    def __init__(self, model_dir: Path, device: str = "cpu"):
        super().__init__()
        torchscript = artifacts.FILES["torchscript"]
        metadata = artifacts.verify(model_dir, only=(torchscript,))  # a teacher with a bad checksum teaches nothing
        self.model = torch.jit.load(str(Path(model_dir) / torchscript), map_location=device).eval()
        cal = metadata.get("calibration") or {}
        self.temperature = float(cal["temperature"]) if cal.get("applied") else 1.0
        self.tag = artifacts.model_id(metadata)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return calibration.rescale(self.model(x), 1.0 / self.temperature)


def fit(recipe: dict, data: dict, args, history: list, only: int | None = None) -> tuple[nn.Module, list]:
    """Train (or load from the member cache) every member of a recipe, its teacher first; the averaged module.

    The teacher's epochs go into `history` too (marked "teacher"), so that the recipe's cost includes them.
    With `only`, just that member is trained (or loaded), its teacher still whole.
    """
    teacher = None
    if args.teacher_model and recipe.get("teacher"):
        teacher = ExportedTeacher(args.teacher_model, recipe["device"])
        print(f"teacher: exported model {teacher.tag} from {args.teacher_model} "
              f"(calibration T={teacher.temperature:.3f} undone)", flush=True)
    elif recipe.get("teacher"):
        teacher_recipe = resolve_recipe(args, recipe["teacher"])
        print(f"teacher: profile {recipe['teacher']} ({teacher_recipe['ensemble']} members)", flush=True)
        teacher_history: list = []
        teacher, _ = fit(teacher_recipe, data, args, teacher_history)
        history.extend({**h, "teacher": recipe["teacher"]} for h in teacher_history)
        teacher.eval()
    members, member_val = [], []
    for member in range(recipe["ensemble"]) if only is None else [only]:
        model, best = fit_member(member, recipe, data, history, args.cache_dir, teacher)
        members.append(model)
        member_val.append(best)
    return Probabilities(members).eval(), member_val


def run(args) -> dict:
    """Load data, train the recipe's members, and evaluate the result once on the test set (unless --no-test)."""
    start = time.time()
    recipe = resolve_recipe(args)
    distributed.init()
    torch.set_num_threads(recipe["threads"])
    if recipe["device"].startswith("cuda"):
        # cuBLAS is deterministic only with a fixed workspace; set before CUDA starts. An op without a
        # deterministic CUDA kernel warns rather than ending a long run.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        recipe["device_name"] = torch.cuda.get_device_name(recipe["device"])
        print(f"device: {recipe['device_name']}", flush=True)
    else:
        torch.use_deterministic_algorithms(True)
    download = args.download if args.download is not None else Path(args.data_root) == Path(DEFAULT_DATA_ROOT)
    raw = load_mnist(args.data_root, download)
    train_idx, val_idx = split_indices(len(raw["train_x"]))
    if args.limit_train:
        train_idx = train_idx[:args.limit_train]
    # The training images live on the training device (43 MB); evaluation moves its chunks there.
    data = {"x": raw["train_x"][train_idx].to(recipe["device"]), "y": raw["train_y"][train_idx].to(recipe["device"]),
            "val_x": raw["train_x"][val_idx], "val_y": raw["train_y"][val_idx]}
    print(f"data: {len(data['x'])} train, {len(data['val_x'])} val, {len(raw['test_x'])} test "
          f"({time.time() - start:.1f}s); recipe: {recipe}", flush=True)

    history: list = []
    module, member_val = fit(recipe, data, args, history, only=args.member)
    if args.member is not None:  # one member for the cache, trained beside the others; nothing to evaluate
        return {"member_only": args.member, "train_seconds": time.time() - start}
    own = [h for h in history if "teacher" not in h]
    val = test(module, data["val_x"], data["val_y"])
    metrics = {"val_accuracy": val["accuracy"], "val_loss": val["loss"], "member_val_accuracy": member_val,
               "val_size": len(data["val_y"]), "train_size": len(data["y"])}
    out = {"module": module, "metrics": metrics, "history": own, "recipe": recipe, "md5": raw["md5"],
           # epoch time of every network it took (the teacher's too), whether trained now or loaded from the cache
           "training_seconds": sum(h["seconds"] for h in history),
           "val": {"outputs": val["outputs"], "labels": data["val_y"], "images": data["val_x"]},
           "test_x": raw["test_x"], "test_y": raw["test_y"]}
    if args.test:
        result = test(module, raw["test_x"], raw["test_y"])  # the one and only look at the test set
        pairs = raw["test_y"] * 10 + result["predictions"]
        confusion = torch.bincount(pairs, minlength=100).reshape(10, 10)
        per_class = (confusion.diag().float() / confusion.sum(1).clamp_min(1).float()).tolist()
        metrics.update(test_accuracy=result["accuracy"], test_loss=result["loss"], per_class_accuracy=per_class,
                       confusion_matrix=confusion.tolist(), test_size=len(raw["test_y"]))
        out.update(test_predictions=result["predictions"], test_outputs=result["outputs"])
    out["train_seconds"] = time.time() - start
    return out


# ------------------------------------------------------------------------------------------------ CLI
def _widths(text: str):
    return tuple(int(w) for w in text.split(",") if w.strip())


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--data-root", default=DEFAULT_DATA_ROOT, help="folder holding MNIST/raw/")
    parser.add_argument("--download", action=argparse.BooleanOptionalAction, default=None,
                        help="download missing files (default: only when --data-root is the default data/)")
    parser.add_argument("--profile", choices=list(PROFILES), default="quick",
                        help="quick: >=98.5%% in <1 min; the others: see docs/mnist.md")
    hp = parser.add_argument_group("hyper-parameters (default: the profile's value)")
    hp.add_argument("--epochs", type=int)
    hp.add_argument("--batch-size", type=int)
    hp.add_argument("--lr", type=float, help="peak learning rate of the one-cycle schedule")
    hp.add_argument("--hidden", type=_widths, help="hidden widths, e.g. 1536,1536")
    hp.add_argument("--dropout", type=float)
    hp.add_argument("--batchnorm", action=argparse.BooleanOptionalAction, default=None)
    hp.add_argument("--weight-decay", type=float)
    hp.add_argument("--label-smoothing", type=float)
    hp.add_argument("--ensemble", type=int, help="number of independently seeded members averaged")
    hp.add_argument("--rotate", type=float, help="max rotation, degrees")
    hp.add_argument("--scale", type=float, help="max relative scale change")
    hp.add_argument("--translate", type=float, help="max shift, pixels")
    hp.add_argument("--elastic-alpha", type=float, help="elastic distortion strength, pixels (0: off)")
    hp.add_argument("--elastic-sigma", type=float, help="elastic smoothing sigma, pixels")
    hp.add_argument("--distill-alpha", type=float, help="weight of the teacher's soft targets (students only)")
    hp.add_argument("--distill-temperature", type=float, help="softening temperature T (students only)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--device", default="cpu", help="where to train: cpu (default) or cuda[:N]")
    parser.add_argument("--member", type=int, default=None,
                        help="train only member N of the recipe into --cache-dir and stop (to train members in "
                             "parallel processes; a later run without --member finds them all in the cache)")
    parser.add_argument("--limit-train", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--max-steps", type=int, default=None, help="stop each member after N steps")
    parser.add_argument("--out", default=None,
                        help="also place the version, with its report, in OUT/<name>/<version>/ (an existing version "
                             "folder is left as is); without it, the version goes to the BentoML model store only "
                             "and the report is not kept")
    parser.add_argument("--no-publish", action="store_true",
                        help="do not publish to the BentoML model store (needs --out: e.g. on a machine without "
                             "BentoML)")
    parser.add_argument("--name", default=None,
                        help=f"model name (default: {artifacts.MNIST_DISTILLED} for --profile distilled, the served "
                             f"student; {artifacts.MNIST} otherwise)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="keep trained members here and reuse them in recipes that share them "
                             "(e.g. build/mnist-members: the teacher of 'distilled' is trained once)")
    parser.add_argument("--teacher-model", type=Path, default=None,
                        help="distil from this exported model folder (e.g. models/mnist-fc/<version>) instead of "
                             "training the profile's teacher (students only)")
    parser.add_argument("--test", action=argparse.BooleanOptionalAction, default=True,
                        help="evaluate the finished model on the test set (--no-test: validation only, for trials)")
    parser.add_argument("--no-export", action="store_true", help="skip exporting the model")
    return parser


def calibrate(result: dict) -> dict:
    """Fit temperature scaling on validation; keep it when it lowers the validation calibration error."""
    val_probs, val_y = result["val"]["outputs"], result["val"]["labels"]
    t = calibration.fit_temperature(val_probs, val_y)
    before, after = calibration.reliability(val_probs, val_y), calibration.reliability(calibration.rescale(val_probs, t), val_y)
    report = {"temperature": t, "applied": after["ece"] < before["ece"], "val_before": before, "val_after": after}
    test_probs, test_y = result["test_outputs"], result["test_y"]
    report["test_before"] = calibration.reliability(test_probs, test_y)
    report["test_after"] = calibration.reliability(calibration.rescale(test_probs, t), test_y)
    return report


def main(args) -> dict:
    from training.plots import save_report
    from training.reference import digits_reference

    if args.member is not None and not args.cache_dir:
        raise SystemExit("--member needs --cache-dir: the member is only kept there")
    if args.no_publish and not args.out and not args.no_export:
        raise SystemExit("--no-publish needs --out: the version would be kept nowhere")
    if args.name is None:  # retraining the served student must not overwrite the served committee
        args.name = artifacts.MNIST_DISTILLED if args.profile == "distilled" else artifacts.MNIST
    result = run(args)
    if "member_only" in result:
        print(f"member {args.member} is in {args.cache_dir} ({result['train_seconds']:.1f}s)", flush=True)
        return result
    result["module"] = result["module"].cpu()  # exported and compared on the CPU, where it is served
    if not distributed.is_main():  # rank 0 alone reports and exports; the weights are identical
        distributed.finish()
        return result
    metrics = result["metrics"]
    if not args.test:
        print(f"val accuracy {metrics['val_accuracy']:.4f}  val loss {metrics['val_loss']:.4f}  "
              f"members {metrics['member_val_accuracy']}  time {result['train_seconds']:.1f}s (test set not used)")
        distributed.finish()
        return result
    cal = calibrate(result)
    module = calibration.Calibrated(result["module"], cal["temperature"]).eval() if cal["applied"] else result["module"]
    served = calibration.rescale(result["test_outputs"], cal["temperature"]) if cal["applied"] else result["test_outputs"]
    print(f"test accuracy {metrics['test_accuracy']:.4f}  test loss {metrics['test_loss']:.4f}  "
          f"val accuracy {metrics['val_accuracy']:.4f}  temperature {cal['temperature']:.3f} "
          f"({'applied' if cal['applied'] else 'not applied'}: val ECE {cal['val_before']['ece']:.4f} -> "
          f"{cal['val_after']['ece']:.4f}, test ECE {cal['test_before']['ece']:.4f} -> {cal['test_after']['ece']:.4f})  "
          f"time {result['train_seconds']:.1f}s", flush=True)

    def report(folder: Path) -> None:
        paths = save_report(folder / "report", result["history"], metrics["confusion_matrix"], result["test_x"],
                            result["test_y"], served, cal)
        print(f"report: {', '.join(p.name for p in paths)}", flush=True)

    def reference(folder: Path) -> dict:
        return digits_reference(folder / artifacts.FILES["onnx"], to_float(result["val"]["images"]).numpy())

    if not args.no_export:
        from training import export

        export.export_model(
            module, args.name, Path(args.out) if args.out else None, publish=not args.no_publish, report=report,
            reference=reference,
            example=torch.rand(4, 1, 28, 28),
            parity_inputs=to_float(result["test_x"]),
            atol=1e-5, check_argmax=True,
            input_spec={**artifacts.DIGITS.input.as_dict(), "range": [0.0, 1.0],
                        "description": "grayscale digits, white on black, pixel value / 255, NCHW"},
            output_spec={**artifacts.DIGITS.output.as_dict(),
                         "description": "softmax probability of each digit 0-9; rows sum to 1"},
            metrics=metrics, task="classification",
            extra={"recipe": result["recipe"], "seed": result["recipe"]["seed"], "dataset_md5": result["md5"],
                   "calibration": cal,
                   "train_seconds": result["train_seconds"], "training_seconds": result["training_seconds"],
                   "history": result["history"]})
    distributed.finish()
    return result


if __name__ == "__main__":
    main(add_arguments(argparse.ArgumentParser(description=__doc__)).parse_args())
