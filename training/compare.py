"""Compare finished MNIST models (exported folders): size, accuracy, calibration, training time and ONNX Runtime cost per image.

    python -m training.compare build/mnist-runs/*/mnist-fc* --markdown build/mnist-table.md --plot docs/mnist-tradeoff.png

Accuracy figures come from each model's metadata.json, written when the model was finished (the test set
is never looked at again here); the speed is measured now, for all models in one run on this machine:
ONNX Runtime on the CPU with one intra-op thread, at batch 1 and batch 64.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort

import artifacts


def parameters(onnx_path: Path) -> int:
    model = onnx.load(str(onnx_path))
    return int(sum(np.prod(t.dims) for t in model.graph.initializer))


def microseconds_per_image(predict: Callable[[np.ndarray], object], x: np.ndarray, seconds: float = 2.0) -> float:
    """Median time of one `predict(x)` over repeated calls, divided by the batch, after a warm-up (which
    also builds a GPU's kernels). harness.cuda times the service's runners with it too."""
    for _ in range(10):
        predict(x)
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 20:
        t = time.perf_counter()
        predict(x)
        times.append(time.perf_counter() - t)
    return float(np.median(times)) / len(x) * 1e6


def onnx_microseconds_per_image(onnx_path: Path, batch: int) -> float:
    """ONNX Runtime on the CPU, one intra-op thread, no spinning, on seeded random pixels."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).random((batch, 1, 28, 28), dtype=np.float32)
    return microseconds_per_image(lambda xb: session.run(None, {name: xb}), x)


def training_seconds(meta: dict) -> float:
    """What training cost where it ran: per network, its epochs x its median epoch time (robust to the pauses and
    contention a long run on a shared machine meets). A student's teacher is added in main()."""
    history = meta.get("history") or []
    if not history:
        return meta.get("train_seconds", 0.0)
    total = 0.0
    for member in {h["member"] for h in history}:
        rows = [h["seconds"] for h in history if h["member"] == member]
        total += len(rows) * float(np.median(rows))
    return total


def describe(folder: Path) -> dict:
    meta = artifacts.read_metadata(folder)
    m, recipe = meta["metrics"], meta.get("recipe", {})
    onnx_path = folder / "model.onnx"
    cal = meta.get("calibration")
    seconds = training_seconds(meta)
    return {
        "folder": str(folder), "name": meta["name"], "profile": recipe.get("profile", "?"),
        "tag": artifacts.model_id(meta),
        "network": f"{recipe.get('ensemble', 1)} x 784-{'-'.join(str(w) for w in recipe.get('hidden', []))}-10"
                   + (f", taught by {recipe['teacher']}" if recipe.get("teacher") else ""),
        "epochs": recipe.get("epochs"), "parameters": parameters(onnx_path), "teacher": recipe.get("teacher"),
        "file_mb": onnx_path.stat().st_size / 1e6,
        "test_accuracy": m["test_accuracy"], "val_accuracy": m["val_accuracy"],
        "test_errors": round((1 - m["test_accuracy"]) * m.get("test_size", 10000)),
        "training_minutes": (seconds or 0) / 60, "trained_on": recipe.get("device_name") or f"{recipe.get('threads', '?')} CPU cores",
        "ece_before": cal["test_before"]["ece"] if cal else None, "ece_after": cal["test_after"]["ece"] if cal else None,
        "temperature": cal["temperature"] if cal and cal["applied"] else None,
        "us_batch1": onnx_microseconds_per_image(onnx_path, 1), "us_batch64": onnx_microseconds_per_image(onnx_path, 64),
    }


def add_teacher_time(rows: list[dict]) -> list[dict]:
    """A student's training cost includes its teacher's, when the teacher is in the table: named by profile
    (trained in the same run) or by name:version (an exported model, --teacher-model)."""
    for r in rows:
        teacher = next((t for t in rows if r["teacher"] and r["teacher"] in (t["profile"], t["tag"])), None)
        if teacher is not None:
            r["training_minutes"] += teacher["training_minutes"]
    return rows


def markdown(rows: list[dict]) -> str:
    head = ("| recipe | network | epochs | parameters | ONNX file | test accuracy (errors) | val accuracy | "
            "training (where) | µs/image batch 1 | µs/image batch 64 | test ECE before → after (T) |\n"
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
    lines = []
    for r in rows:
        ece = "—" if r["ece_before"] is None else (
            f"{100 * r['ece_before']:.2f} % → {100 * r['ece_after']:.2f} %"
            + (f" (T = {r['temperature']:.2f})" if r["temperature"] else " (not applied)"))
        lines.append(f"| `{r['profile']}` | {r['network']} | {r['epochs']} | {r['parameters'] / 1e6:.2f} M | "
                     f"{r['file_mb']:.1f} MB | {100 * r['test_accuracy']:.2f} % ({r['test_errors']}) | "
                     f"{100 * r['val_accuracy']:.2f} % | {r['training_minutes']:.0f} min ({r['trained_on']}) | {r['us_batch1']:.0f} | "
                     f"{r['us_batch64']:.0f} | {ece} |")
    return head + "\n".join(lines) + (f"\n\nSpeed measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
                                      f"{platform.processor() or platform.machine()}, ONNX Runtime {ort.__version__}, "
                                      f"one intra-op thread, median of >= 2 s per cell.\n")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        ax.scatter(r["us_batch1"], 100 * r["test_accuracy"], s=20 + r["parameters"] / 1e5)
        ax.annotate(f"{r['profile']}, {r['epochs']} epochs\n{r['network']}", (r["us_batch1"], 100 * r["test_accuracy"]), fontsize=7,
                    xytext=(5, -12), textcoords="offset points")
    ax.set(xscale="log", xlabel="ONNX Runtime µs per image, batch 1, one thread (log)", ylabel="test accuracy (%)",
           title="MNIST, fully connected: accuracy against cost (area ~ parameters)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path, help="exported model folders (with metadata.json and model.onnx)")
    ap.add_argument("--markdown", type=Path, help="write the table here (default: print it)")
    ap.add_argument("--plot", type=Path, help="write the accuracy/cost scatter plot here")
    args = ap.parse_args()
    rows = add_teacher_time(sorted((describe(f) for f in args.folders), key=lambda r: r["us_batch1"]))
    table = markdown(rows)
    if args.markdown:
        args.markdown.write_text(table)
    print(table)
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
