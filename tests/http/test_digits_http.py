"""POST /digit, /digits and /digit/image through BentoML's ASGI app: answers and every bad input."""

import numpy as np
import pytest
from PIL import Image

import artifacts
import artifacts.serving
from testkit.payloads import crafted_png as png_header, encode, png

N = 64  # test images used for the correctness checks
VERSION = {name: artifacts.read_metadata(artifacts.serving.default_dir(name))["version"]
           for name in (artifacts.MNIST, artifacts.MNIST_DISTILLED)}


def upload(client, data: bytes, field: str = "image", content_type: str = "image/png"):
    return client.post("/digit/image", files={field: ("digit.png", data, content_type)})


@pytest.fixture(scope="module")
def sample(mnist_test_images):
    images, labels = mnist_test_images
    return images[:N], labels[:N]


def assert_prediction(p: dict, model: str = artifacts.MNIST) -> None:
    assert set(p) == {"digit", "confidence", "probabilities", "model", "version"}
    assert (p["model"], p["version"]) == (model, VERSION[model])  # the committee unless asked otherwise
    assert len(p["probabilities"]) == 10 and sum(p["probabilities"]) == pytest.approx(1, abs=1e-5)
    assert p["confidence"] == max(p["probabilities"]) == p["probabilities"][p["digit"]]


def test_digit_from_integer_pixels(client, sample):
    images, labels = sample
    r = client.post("/digit", json={"pixels": images[0].tolist()})
    assert r.status_code == 200, r.text
    assert_prediction(r.json())
    assert r.json()["digit"] == labels[0]


def test_max_value_one_gives_the_same_answer(client, sample):
    images, _ = sample
    a = client.post("/digit", json={"pixels": images[1].tolist()}).json()
    b = client.post("/digit", json={"pixels": (images[1] / 255.0).tolist(), "max_value": 1}).json()
    assert a["digit"] == b["digit"]
    np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=1e-5)


def test_digits_batch_keeps_order_and_is_accurate(client, sample):
    images, labels = sample
    r = client.post("/digits", json={"images": images.tolist()})
    assert r.status_code == 200, r.text
    predictions = r.json()
    assert len(predictions) == N
    for p in predictions:
        assert_prediction(p)
    digits = np.array([p["digit"] for p in predictions])
    assert (digits == labels).mean() >= 0.95
    # same answers as one at a time, in the same order
    for i in (0, 17, N - 1):
        single = client.post("/digit", json={"pixels": images[i].tolist()}).json()
        assert single["digit"] == predictions[i]["digit"]


def test_digits_accepts_the_maximum_batch(client, mnist_test_images):
    images, labels = mnist_test_images
    r = client.post("/digits", json={"images": images[:1024].tolist()})
    assert r.status_code == 200 and len(r.json()) == 1024


@pytest.mark.parametrize("model,name", [("committee", artifacts.MNIST), ("distilled", artifacts.MNIST_DISTILLED)])
def test_the_model_field_chooses_the_classifier_on_every_digit_endpoint(client, sample, model, name):
    images, labels = sample
    one = client.post("/digit", json={"pixels": images[0].tolist(), "model": model})
    many = client.post("/digits", json={"images": images.tolist(), "model": model})
    upload_ = client.post("/digit/image", files={"image": ("d.png", png(images[0]), "image/png")}, data={"model": model})
    for r in (one, many, upload_):
        assert r.status_code == 200, r.text
    for p in [one.json(), *many.json(), upload_.json()]:
        assert_prediction({k: v for k, v in p.items() if k != "pixels"}, name)
    assert (np.array([p["digit"] for p in many.json()]) == labels).mean() >= 0.95
    np.testing.assert_allclose(one.json()["probabilities"], many.json()[0]["probabilities"], atol=1e-6)
    np.testing.assert_allclose(one.json()["probabilities"], upload_.json()["probabilities"], atol=1e-6)


def test_the_two_classifiers_are_different_networks(client, sample):
    images, _ = sample
    answers = {model: client.post("/digits", json={"images": images.tolist(), "model": model}).json()
               for model in ("committee", "distilled")}
    committee, distilled = (np.array([p["probabilities"] for p in answers[m]]) for m in ("committee", "distilled"))
    assert np.abs(committee - distilled).max() > 1e-3  # a `model` field that changed nothing would pass the rest


@pytest.mark.parametrize("variant", ["as-is", "inverted", "upscaled", "jpeg", "rgb"])
def test_image_upload_agrees_with_raw_pixels(client, sample, variant):
    images, labels = sample
    agree = 0
    for image, label in zip(images[:20], labels[:20]):
        if variant == "as-is":
            data = png(image)
        elif variant == "inverted":
            data = png(255 - image)
        elif variant == "upscaled":
            data = png(np.asarray(Image.fromarray(image).resize((200, 200), Image.BILINEAR)))
        elif variant == "jpeg":
            data = encode(Image.fromarray(image).resize((112, 112)), "JPEG", quality=95)
        else:
            data = png(Image.fromarray(255 - image).convert("RGB"))
        r = upload(client, data)
        assert r.status_code == 200, r.text
        raw = client.post("/digit", json={"pixels": image.tolist()}).json()["digit"]
        agree += r.json()["digit"] == raw
    assert agree >= (20 if variant in ("as-is", "inverted") else 18)


def blank():
    return [[0] * 28 for _ in range(28)]


JSON_BAD = {
    "27 rows": ("/digit", {"pixels": blank()[:27]}, "expected 28 rows, got 27"),
    "27 columns": ("/digit", {"pixels": [[0] * 27] * 28}, "row 0 has 27 values"),
    "ragged rows": ("/digit", {"pixels": blank()[:27] + [[0] * 29]}, "row 27 has 29 values"),
    "flat 784": ("/digit", {"pixels": [0] * 784}, "flat list of 784"),
    "above max_value": ("/digit", {"pixels": [[256] * 28] * 28}, "above max_value=255"),
    "above max_value 1": ("/digit", {"pixels": [[2] * 28] * 28, "max_value": 1}, "above max_value=1"),
    "negative": ("/digit", {"pixels": [[-1] * 28] * 28}, "greater than or equal to 0"),
    "string pixel": ("/digit", {"pixels": [["0"] * 28] * 28}, "valid number"),
    "zero max_value": ("/digit", {"pixels": blank(), "max_value": 0}, "greater than 0"),
    "missing pixels": ("/digit", {}, "pixels: Field required"),
    "empty images": ("/digits", {"images": []}, "send 1 to at most 1024 images per request, got 0"),
    "too many images": ("/digits", {"images": [blank()] * 1025}, "at most 1024"),
    "bad image in batch": ("/digits", {"images": [blank(), blank()[:3]]}, "images[1]: expected 28 rows, got 3"),
    "unknown model": ("/digit", {"pixels": blank(), "model": "cnn"}, "model: Input should be 'committee' or 'distilled'"),
    "model by its full name": ("/digits", {"images": [blank()], "model": "mnist-fc"}, "'committee' or 'distilled'"),
    "model not a string": ("/digit", {"pixels": blank(), "model": 1}, "'committee' or 'distilled'"),
}


@pytest.mark.parametrize("case", JSON_BAD, ids=list(JSON_BAD))
def test_bad_json_input_is_a_400(client, case):
    route, body, message = JSON_BAD[case]
    if isinstance(body, str):
        r = client.post(route, content=body, headers={"content-type": "application/json"})
    else:
        r = client.post(route, json=body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]
    assert client.post("/digit", json={"pixels": blank()}).status_code == 200


def test_nan_pixel_is_refused(client):
    row = "[" + ", ".join(["NaN"] + ["0"] * 27) + "]"
    body = '{"pixels": [' + ", ".join([row] + ["[" + ", ".join(["0"] * 28) + "]"] * 27) + "]}"
    r = client.post("/digit", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "finite number" in r.json()["error"]


def test_many_bad_pixels_give_the_first_error_only(client):
    r = client.post("/digits", json={"images": [[["x"] * 28] * 28] * 100})  # 78,400 bad values
    assert r.status_code == 400
    body = r.json()
    assert len(body["detail"]) == 1 and body["error"] == "images[0][0][0]: Input should be a valid number"


UPLOAD_BAD = {
    "non-image bytes": (b"this is not an image at all", "unsupported or unrecognised image format"),
    "truncated PNG": ("truncated", "truncated or corrupt"),
    "zero-size image": (png_header(0, 0), "PNG"),
    "decompression bomb": (png_header(20_000, 20_000), "the limit is 16777216 pixels"),
    "empty file": (b"", "empty"),
}


@pytest.mark.parametrize("case", UPLOAD_BAD, ids=list(UPLOAD_BAD))
def test_bad_upload_is_a_400(client, sample, case):
    data, message = UPLOAD_BAD[case]
    if data == "truncated":
        whole = png(np.asarray(Image.fromarray(sample[0][0]).resize((200, 200))))
        data = whole[: len(whole) // 2]
    r = upload(client, data)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]
    assert upload(client, png(sample[0][0])).status_code == 200


@pytest.mark.parametrize("value", ["cnn", "", '"committee', "1"])
def test_upload_with_an_unknown_model_is_a_400(client, sample, value):
    r = client.post("/digit/image", files={"image": ("d.png", png(sample[0][0]), "image/png")}, data={"model": value})
    assert r.status_code == 400, r.text
    assert "model: Input should be 'committee' or 'distilled'" in r.json()["error"]


def test_upload_with_the_model_sent_as_a_file_part_is_a_400(client, sample):
    files = {"image": ("d.png", png(sample[0][0]), "image/png"), "model": ("m.txt", b"distilled", "text/plain")}
    r = client.post("/digit/image", files=files)
    assert r.status_code == 400, r.text
    assert "model" in r.json()["error"]


def test_upload_under_the_wrong_field_name_is_a_400(client, sample):
    r = upload(client, png(sample[0][0]), field="file")
    assert r.status_code == 400, r.text
    assert "send the file in field: image" in r.json()["error"]


def test_upload_as_json_is_refused_without_fetching(client):
    r = client.post("/digit/image", json="http://127.0.0.1:1/x.png")
    assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]


def test_image_sent_as_a_text_part_is_not_fetched(client):
    r = client.post("/digit/image", files={"image": (None, "http://127.0.0.1:1/x.png")})
    assert r.status_code == 400, r.text
    assert "must be uploaded as a file" in r.json()["error"]


def test_two_files_under_the_image_field_are_refused(client, sample):
    data = png(sample[0][0])
    r = client.post("/digit/image", files=[("image", ("a.png", data, "image/png")), ("image", ("b.png", data, "image/png"))])
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "field 'image' must hold one file; this upload has 2"


def test_image_answer_carries_the_28x28_image_the_model_saw(client, sample):
    images, labels = sample
    r = upload(client, png(255 - images[3]))  # black on white: the server inverts it
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["digit"] == labels[3]
    np.testing.assert_array_equal(np.asarray(body["pixels"]), images[3])  # 28x28 round-trips exactly
    big = upload(client, png(np.asarray(Image.fromarray(images[3]).resize((200, 200), Image.BILINEAR)))).json()
    seen = np.asarray(big["pixels"])
    assert seen.shape == (28, 28) and seen.dtype.kind == "i" and 0 <= seen.min() and seen.max() == 255


@pytest.mark.parametrize("route,field", [("/digit", "pixels"), ("/digits", "images")])
def test_deeply_nested_json_is_a_400_not_a_500(client, route, field):
    deep = b"[" * 5000 + b"]" * 5000  # pydantic refuses it; the readable-error path must not choke on it either
    r = client.post(route, content=b'{"' + field.encode() + b'": ' + deep + b"}", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "recursion" in r.json()["error"].lower(), r.text
