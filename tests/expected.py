"""Expected answers for the service's tests, from the committed metadata (the 11 readings): no torch, no training code."""

import numpy as np

import artifacts
import artifacts.serving

LINEAR = artifacts.read_metadata(artifacts.serving.default_dir(artifacts.TEMPERATURE_LINEAR))
T_U, T_C = LINEAR["data"]["t_u"], LINEAR["data"]["t_c"]
SLOPE, INTERCEPT = (float(v) for v in np.polyfit(T_U, T_C, 1))  # least squares, in the thermometer's own unit


def celsius(readings) -> np.ndarray:
    """What the linear model must answer: the least-squares line through the 11 points."""
    return SLOPE * np.asarray(readings, dtype=np.float64) + INTERCEPT


def v2_cases(post, mnist_raw: np.ndarray, readings: list[float], n_images: int = 8) -> dict[str, tuple[dict, list]]:
    """By model: (a v2 input tensor, the typed endpoint's answer to the same input as one flat list), for every model;
    `post(path, body)` answers a typed endpoint's JSON, `mnist_raw` are 0-255 images (N x 28 x 28)."""
    images = (mnist_raw[:n_images].astype(np.float64) / 255).astype(np.float32)
    found = {}
    for choice, m in artifacts.choices(artifacts.TEMPERATURE).items():
        answer = post("/temperature", {"readings": readings, "model": choice})
        found[m.name] = ({"name": "readings", "datatype": "FP64", "shape": [len(readings), 1], "data": readings},
                         answer["celsius"])
    for choice, m in artifacts.choices(artifacts.DIGITS).items():
        answer = post("/digits", {"images": mnist_raw[:n_images].tolist(), "model": choice})
        found[m.name] = ({"name": "images", "datatype": "FP32", "shape": [n_images, 1, 28, 28],
                          "data": images.ravel().tolist()}, [p for a in answer for p in a["probabilities"]])
    return found


def check_v2_output(out: dict, name: str, want: list, raw: bool, rows: int, images: int = 8) -> None:
    """A client's one output for model `name` (as the testkit/oip scripts report it) against the typed endpoint's answer
    `want`: tensor name, datatype and shape, raw or typed as expected, values (the digit models' up to rounding: they
    were batched with other requests)."""
    assert out["raw"] == raw, out
    if name in (artifacts.TEMPERATURE_LINEAR, artifacts.TEMPERATURE_MLP):
        assert (out["name"], out["datatype"], out["shape"]) == ("celsius", "FP64", [rows, 1])
        assert out["data"] == want
    else:
        assert (out["name"], out["datatype"], out["shape"]) == ("probabilities", "FP32", [images, 10])
        np.testing.assert_allclose(out["data"], want, rtol=0, atol=1e-6)
