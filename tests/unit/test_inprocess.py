"""The service class called in-process (no HTTP): the endpoints' Python behaviour."""

import asyncio

import numpy as np
import pytest

from expected import celsius


@pytest.fixture(scope="module")
def svc():
    from service.service import ThermoDigits

    return ThermoDigits()


def test_temperature_in_process(svc):
    result = asyncio.run(svc.temperature(readings=[35.7, 55.9]))
    assert result.model == "temperature-linear"
    np.testing.assert_allclose(result.celsius, celsius([35.7, 55.9]), atol=1e-3)
    assert asyncio.run(svc.temperature(readings=[35.7], model="mlp")).model == "temperature-mlp"


def test_digit_and_digits_in_process(svc, mnist_test_images):
    images, labels = mnist_test_images

    async def both():
        return await asyncio.gather(svc.digit(pixels=images[0].tolist()),
                                    svc.digits(images=images[:32].tolist(), max_value=255))

    one, many = asyncio.run(both())
    assert one.digit == labels[0] and 0.5 < one.confidence <= 1
    assert [p.digit for p in many][:1] == [one.digit]
    assert np.mean([p.digit == y for p, y in zip(many, labels[:32])]) >= 0.9


def test_describe_reports_backend_device_and_versions(svc):
    models = svc.plane.describe()["models"]
    assert {m["backend"] for m in models.values()} == {"onnx"}
    assert all(len(m["version"]) == 16 and m["roles"] == {m["version"]: ["default"]} for m in models.values())


def test_a_started_worker_runs_full_garbage_collections_a_tenth_as_often(svc):
    import gc

    from service.upstream.gc_tuning import FULL_GC_EVERY

    assert FULL_GC_EVERY == 10 * 10 and gc.get_threshold()[2] == FULL_GC_EVERY  # CPython's default: 10
    assert gc.get_freeze_count() > 0  # what was loaded at start is never scanned again
