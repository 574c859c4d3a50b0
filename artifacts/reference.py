"""A version's reference for monitoring: what it answered on its own validation data, and the thresholds that tell healthy traffic from drifted traffic, chosen on that data.

``metadata["reference"]`` of a digit model (``digits(images, probabilities)`` makes it)::

    {"data": "...", "rows": 5000,
     "classes": [10 shares],                       # the predicted digits on the validation images
     "confidence": {"edges": CONFIDENCE_EDGES, "shares": [...]},   # the top probability, by bucket
     "inputs": {"ink": [low, high], "frame": high},  # mean pixel (0..1), and mean pixel of the 2-pixel frame
     "thresholds": {"window": WINDOW, "drift": ..., "low_confidence": ...}}

* ``drift`` is the population stability index (PSI) of the predicted digits over a window of WINDOW answers against
  ``classes``: ``sum((p - q) * ln(p / q))`` with both shares floored at ``FLOOR``. Its threshold is
  ``DRIFT_MARGIN`` times the largest PSI of ``BOOTSTRAP`` windows of WINDOW validation answers drawn with replacement
  (seed ``SEED``): healthy traffic like the validation data stays under it.
* ``low_confidence``: the confidence below which ``LOW_SHARE`` of the validation answers fall.
* ``inputs``: an image is outside the reference when its mean ink is outside the validation images' range widened by
  ``INK_MARGIN`` on each side, or the mean of its 2-pixel frame is above the validation images' highest plus
  ``FRAME_MARGIN`` (MNIST digits sit in the middle of a black canvas; an inverted or photographed digit does not).

A thermometer model's (``readings(values)``)::

    {"data": "...", "rows": 11, "readings": [...], "range": [low, high],
     "thresholds": {"window": WINDOW, "drift": KS_THRESHOLD}}

whose drift is the Kolmogorov-Smirnov statistic between a window of readings and the readings it was fit to, and
whose inputs outside the reference are readings outside their range.

The reference does not enter the version (artifacts.content_version hashes the model files): it describes the
version's data, and can be recomputed for a version trained before references existed (``python -m training
reference``). numpy only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

CONFIDENCE_EDGES = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0)  # the buckets' upper bounds after 0
WINDOW = 500  # answers per drift window (each worker keeps its own)
FLOOR = 1e-4  # shares below this count as this in the PSI (an empty class would make it infinite)
BOOTSTRAP = 2000
SEED = 20261207
DRIFT_MARGIN = 3.0
LOW_SHARE = 0.01
INK_MARGIN = 0.25  # of the validation range's width, on each side
FRAME_MARGIN = 0.05
KS_THRESHOLD = 0.5
SIDE = 28
RING = 2


def frame_mask() -> np.ndarray:
    """Which of the 784 pixels of a 28x28 image lie in its outer 2-pixel frame."""
    mask = np.ones((SIDE, SIDE), bool)
    mask[RING:-RING, RING:-RING] = False
    return mask.ravel()


FRAME = np.flatnonzero(frame_mask())


def image_statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean ink, mean of the frame) of each image in `x` (N images of 784 values, or N x 1 x 28 x 28), 0..1."""
    images = x.reshape(len(x), SIDE, SIDE)
    total = images.sum(axis=(1, 2))
    inner = images[:, RING:-RING, RING:-RING].sum(axis=(1, 2))
    return total / (SIDE * SIDE), (total - inner) / len(FRAME)


def psi(observed: np.ndarray, expected: np.ndarray) -> float:
    """Population stability index of two share vectors (each summing to 1), shares floored at FLOOR."""
    p, q = np.maximum(observed, FLOOR), np.maximum(expected, FLOOR)
    return float(np.sum((p - q) * np.log(p / q)))


def shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else np.zeros_like(counts, dtype=float)


def confidence_shares(confidence: np.ndarray) -> list[float]:
    """Shares of `confidence` in each bucket (CONFIDENCE_EDGES[i-1], CONFIDENCE_EDGES[i]]; the first includes 0."""
    bins = np.searchsorted(np.asarray(CONFIDENCE_EDGES[1:]), confidence, side="left")
    return shares(np.bincount(np.minimum(bins, len(CONFIDENCE_EDGES) - 2), minlength=len(CONFIDENCE_EDGES) - 1)).tolist()


def digits(images: np.ndarray, probabilities: np.ndarray, data: str) -> dict[str, Any]:
    """The reference of a digit model from its validation `images` (0..1) and its `probabilities` on them."""
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    classes = shares(np.bincount(predicted, minlength=probabilities.shape[1]))
    rng = np.random.default_rng(SEED)
    worst = max(psi(shares(np.bincount(rng.choice(predicted, WINDOW), minlength=len(classes))), classes)
                for _ in range(BOOTSTRAP))
    ink, frame = image_statistics(images)
    low, high = float(ink.min()), float(ink.max())
    width = high - low
    return {
        "data": data, "rows": int(len(predicted)),
        "classes": [round(float(c), 6) for c in classes],
        "confidence": {"edges": list(CONFIDENCE_EDGES), "shares": [round(s, 6) for s in confidence_shares(confidence)]},
        "inputs": {"ink": [round(max(0.0, low - INK_MARGIN * width), 4), round(min(1.0, high + INK_MARGIN * width), 4)],
                   "frame": round(float(frame.max()) + FRAME_MARGIN, 4)},
        "thresholds": {"window": WINDOW, "drift": round(DRIFT_MARGIN * worst, 4),
                       "low_confidence": round(float(np.quantile(confidence, LOW_SHARE)), 4)},
    }


def readings(values: list[float] | np.ndarray, data: str) -> dict[str, Any]:
    """The reference of a thermometer model from the readings it was fit to."""
    values = sorted(float(v) for v in values)
    return {"data": data, "rows": len(values), "readings": values, "range": [values[0], values[-1]],
            "thresholds": {"window": WINDOW, "drift": KS_THRESHOLD}}


def ks(sample: np.ndarray, reference: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical distribution functions."""
    if not len(sample) or not len(reference):
        return math.nan
    sample, reference = np.sort(sample), np.sort(np.asarray(reference, float))
    points = np.concatenate([sample, reference])
    gap = np.searchsorted(sample, points, side="right") / len(sample) - \
        np.searchsorted(reference, points, side="right") / len(reference)
    return float(np.abs(gap).max())
