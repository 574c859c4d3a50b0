"""Write the training report figures (learning curves, confusion matrix, misclassified digits, calibration) as PNGs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers/CI; must be set before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _curves(path: Path, history: list) -> None:
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    members = sorted({h.get("member", 0) for h in history})
    for m in members:
        rows = [h for h in history if h.get("member", 0) == m]
        epochs = [h["epoch"] for h in rows]
        tag = f" (member {m})" if len(members) > 1 else ""
        for ax, key in ((ax_loss, "loss"), (ax_acc, "acc")):
            line, = ax.plot(epochs, [h[f"train_{key}"] for h in rows], "--", label=f"train{tag}")
            ax.plot(epochs, [h[f"val_{key}"] for h in rows], "-", color=line.get_color(), label=f"val{tag}")
    ax_loss.set(title="loss (train is on augmented batches)", xlabel="epoch", ylabel="cross-entropy")
    ax_acc.set(title="accuracy", xlabel="epoch", ylabel="accuracy")
    val = [h["val_acc"] for h in history]
    if val:  # the interesting part is the top few per cent: zoom there
        ax_acc.set_ylim(max(0.0, min(val) - 0.02), 1.0)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _confusion(path: Path, confusion) -> None:
    cm = np.asarray(confusion, dtype=np.int64)
    fig, ax = plt.subplots(figsize=(7, 6))
    # Log colour scale: the diagonal (~1000) would otherwise wash out the handful of errors.
    ax.imshow(np.log1p(cm), cmap="Blues")
    for i in range(10):
        for j in range(10):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if i == j else ("red" if cm[i, j] else "gray"))
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true",
           title=f"test confusion matrix ({cm.trace()}/{cm.sum()} correct)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _misclassified(path: Path, test_x, test_y, probabilities, limit: int = 48) -> None:
    images, labels = np.asarray(test_x), np.asarray(test_y)
    probs = np.asarray(probabilities)
    preds = probs.argmax(1)
    wrong = np.flatnonzero(labels != preds)
    wrong = wrong[np.argsort(-probs[wrong].max(1))][:limit]  # the most confident mistakes first
    cols = 8
    rows = max(1, int(np.ceil(len(wrong) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.35, rows * 1.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        ax.imshow(images[i], cmap="gray")
        ax.set_title(f"#{i} {labels[i]}->{preds[i]} {probs[i].max():.2f}", fontsize=7)
    total = int((labels != preds).sum())
    fig.suptitle(f"misclassified test digits: true->predicted and confidence ({len(wrong)} of {total}, "
                 f"most confident first)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _calibration(path: Path, cal: dict) -> None:
    """Reliability diagram on the test set, before and after temperature scaling."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], ":", color="gray", label="perfect calibration")
    for key, style, label in (("test_before", "o-", "as trained"), ("test_after", "s-", f"T = {cal['temperature']:.2f}")):
        bins = [b for b in cal[key]["bins"] if b["count"] >= 10]  # a handful of digits says nothing
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], style, ms=4,
                label=f"{label}: ECE {100 * cal[key]['ece']:.2f} %")
    ax.set(xlabel="confidence (bins of >= 10 test digits)", ylabel="accuracy", xlim=(0.3, 1.01), ylim=(0.3, 1.01),
           title="calibration on the test set")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_report(out_dir, history, confusion_matrix, test_x, test_y, probabilities, cal: dict | None = None) -> list:
    """Write curves.png, confusion.png, misclassified.png (and calibration.png) into out_dir; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "curves.png", out / "confusion.png", out / "misclassified.png"]
    _curves(paths[0], history)
    _confusion(paths[1], confusion_matrix)
    _misclassified(paths[2], test_x, test_y, probabilities)
    if cal is not None:
        paths.append(out / "calibration.png")
        _calibration(paths[3], cal)
    return paths
