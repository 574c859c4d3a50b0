"""The service class called in-process (no HTTP): the endpoints' Python behaviour."""

import numpy as np
import pytest

from training.temperature import closed_form


@pytest.fixture(scope="module")
def svc():
    from service.service import ThermoDigits

    return ThermoDigits()


def test_temperature_in_process(svc):
    w, b = closed_form()
    result = svc.temperature(readings=[35.7, 55.9])
    assert result.model == "temperature-linear"
    np.testing.assert_allclose(result.celsius, [w * 3.57 + b, w * 5.59 + b], atol=1e-3)
    assert svc.temperature(readings=[35.7], model="mlp").model == "temperature-mlp"


def test_digit_and_digits_in_process(svc, mnist_test_images):
    images, labels = mnist_test_images
    one = svc.digit(pixels=images[0].tolist())
    assert one.digit == labels[0] and 0.5 < one.confidence <= 1
    many = svc.digits(images=images[:32].tolist(), max_value=255)
    assert [p.digit for p in many][:1] == [one.digit]
    assert np.mean([p.digit == y for p, y in zip(many, labels[:32])]) >= 0.9


def test_describe_reports_backend_device_and_versions(svc):
    models = svc.describe()["models"]
    assert {m["backend"] for m in models.values()} == {"onnx"}
    assert all(len(m["version"]) == 16 for m in models.values())
