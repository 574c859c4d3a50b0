"""service/monitoring.py: what one model call adds to each series, the drift window and its score, and a version taken out of service; artifacts/reference.py's statistics."""

import math

import numpy as np
import prometheus_client
import pytest

import artifacts
from artifacts import reference as ref
from service.inference.runtime import LoadedModel
from service.inference.versions import Version
from service.monitoring import Monitor

REFERENCE = {"classes": [0.1] * 10, "inputs": {"ink": [0.05, 0.3], "frame": 0.05},
             "confidence": {"edges": list(ref.CONFIDENCE_EDGES), "shares": [0.0] * 8},
             "thresholds": {"window": 20, "drift": 0.2, "low_confidence": 0.9}}


def digit_version(tag: str, reference: dict | None = REFERENCE) -> Version:
    model = artifacts.model(artifacts.MNIST)
    metadata = {"reference": reference} if reference else {}
    return Version(model, LoadedModel(model.name, tag, metadata, "onnx", "cpu", lambda x: x))


def sample(name: str, tag: str, **labels) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, {"model": "mnist-fc", "version": tag, **labels}) or 0.0


def images(n: int, ink: float = 0.15) -> np.ndarray:
    x = np.zeros((n, 1, 28, 28), np.float32)
    x[:, 0, 4:24, 4:24] = ink * 784 / 400  # ink inside the frame: a mean of `ink` over the image, a black frame
    return x


def answers(classes: list[int], confidence: float = 0.95) -> np.ndarray:
    y = np.full((len(classes), 10), (1 - confidence) / 9, np.float32)
    y[np.arange(len(classes)), classes] = confidence
    return y


def test_one_call_counts_classes_confidence_low_confidence_and_inputs_outside_the_reference():
    monitor, v = Monitor(), digit_version("a" * 16)
    x = np.concatenate([images(3), images(1, ink=0.6)])  # the last one is far too inky
    y = answers([1, 1, 7, 3])
    y[2] = answers([7], 0.5)[0]  # one answer below the low-confidence threshold
    monitor.observe(v, x, y, 2)
    assert sample("model_inputs_total", v.version) == 4
    assert [sample("model_predictions_total", v.version, **{"class": c}) for c in "0137"] == [0, 2, 1, 1]
    assert sample("model_low_confidence_total", v.version) == 1
    assert sample("model_inputs_outside_reference_total", v.version) == 1
    assert sample("model_prediction_confidence_count", v.version) == 4
    assert sample("model_prediction_confidence_bucket", v.version, le="0.5") == 1
    assert sample("model_prediction_confidence_bucket", v.version, le="0.95") == 4
    assert sample("model_drift_threshold", v.version) == 0.2
    monitor.observe(v, images(1), answers([4], 0.985), 1)  # the one-image path counts the same way
    assert sample("model_predictions_total", v.version, **{"class": "4"}) == 1
    assert sample("model_prediction_confidence_bucket", v.version, le="0.99") == 5


def test_drift_is_scored_once_a_window_is_full_and_tells_a_shifted_mix():
    monitor, v = Monitor(), digit_version("b" * 16)
    monitor.observe(v, images(10), answers(list(range(10))), 1)
    monitor.refresh()
    assert prometheus_client.REGISTRY.get_sample_value(
        "model_prediction_drift", {"model": "mnist-fc", "version": v.version}) is None  # 10 of 20: no score yet
    monitor.observe(v, images(10), answers(list(range(10))), 1)
    monitor.refresh()
    assert sample("model_prediction_drift", v.version) == pytest.approx(0.0, abs=1e-9)  # exactly the reference mix
    monitor.observe(v, images(20), answers([0] * 20), 1)  # every answer a zero: the window is now all zeros
    monitor.refresh()
    assert sample("model_prediction_drift", v.version) > 0.2  # above its threshold
    monitor.forget(v)
    assert math.isnan(sample("model_prediction_drift", v.version))


def test_a_version_without_a_reference_is_counted_only():
    monitor, v = Monitor(), digit_version("c" * 16, reference=None)
    monitor.observe(v, images(2), answers([1, 2]), 1)
    monitor.refresh()
    assert sample("model_inputs_total", v.version) == 2
    assert sample("model_predictions_total", v.version, **{"class": "1"}) == 0


def test_reference_statistics():
    x = np.random.default_rng(0).random((5, 1, 28, 28)).astype(np.float32)
    ink, frame = ref.image_statistics(x)
    flat = x.reshape(5, -1)
    np.testing.assert_allclose(ink, flat.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(frame, flat[:, ref.FRAME].mean(axis=1), rtol=1e-5)
    assert len(ref.FRAME) == 28 * 28 - 24 * 24
    assert ref.psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0
    assert ref.psi(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(
        (1 - 0.5) * math.log(1 / 0.5) + (1e-4 - 0.5) * math.log(1e-4 / 0.5))
    assert ref.ks(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0 and ref.ks(np.array([10.0]), np.array([1.0])) == 1
    assert ref.confidence_shares(np.array([0.4, 0.75, 0.9995, 1.0])) == [0.25, 0, 0.25, 0, 0, 0, 0, 0.5]
