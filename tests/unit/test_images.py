"""Tests for service/images.py: decoding, validation and MNIST-style preprocessing."""

from __future__ import annotations

import io
import random
import warnings

import numpy as np
import pytest
from PIL import Image

from testkit.payloads import crafted_png, encode, mnist_test
from service.inference import images
from service.inference.images import ImageError, preprocess, to_mnist

N_DIGITS = 50


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """The first N_DIGITS MNIST test images, (N, 28, 28) uint8, read from the raw IDX file."""
    return mnist_test(N_DIGITS, synthetic=False)[0]


def upscaled(digit: np.ndarray, size: int = 200) -> Image.Image:
    return Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    a = a.astype(np.float64)
    idx = np.arange(a.shape[0])
    return float((a.sum(1) * idx).sum() / a.sum()), float((a.sum(0) * idx).sum() / a.sum())


def assert_mnist_shaped(out: np.ndarray) -> None:
    assert isinstance(out, np.ndarray)
    assert out.shape == (28, 28)
    assert out.dtype == np.uint8
    assert out.flags["C_CONTIGUOUS"]


# ---------------------------------------------------------------- MNIST round trips


def test_mnist_png_round_trips_unchanged(digits):
    for digit in digits:
        out = preprocess(encode(Image.fromarray(digit), "PNG"))
        assert_mnist_shaped(out)
        np.testing.assert_array_equal(out, digit)


def test_inverted_mnist_png_is_inverted_back(digits):
    for digit in digits:
        out = preprocess(encode(Image.fromarray(255 - digit), "PNG"))
        np.testing.assert_array_equal(out, digit)


def test_upscaled_mnist_is_recentred_and_refitted(digits):
    similarities = []
    for digit in digits:
        out = preprocess(encode(upscaled(digit), "PNG"))
        assert_mnist_shaped(out)
        cy, cx = centre_of_mass(out)
        assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1, (cy, cx)
        rows, cols = np.flatnonzero(out.any(1)), np.flatnonzero(out.any(0))
        assert rows[-1] - rows[0] + 1 <= 20 and cols[-1] - cols[0] + 1 <= 20
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 >= 19  # fitted, not shrunk
        assert out.max() == 255
        similarities.append(cosine(out, digit))
    assert np.mean(np.array(similarities) > 0.8) >= 0.9, similarities
    assert np.median(similarities) > 0.9


def test_upscaled_dark_on_light_matches_light_on_dark(digits):
    for digit in digits[:10]:
        light_on_dark = preprocess(encode(upscaled(digit), "PNG"))
        dark_on_light = preprocess(encode(upscaled(255 - digit), "PNG"))
        assert cosine(light_on_dark, dark_on_light) > 0.99


def test_small_digit_in_corner_of_large_page_is_centred(digits):
    page = np.full((300, 400), 235, np.uint8)  # off-white paper
    page[250:278, 360:388] = np.minimum(235, 255 - digits[0])  # dark digit, bottom right
    out = preprocess(encode(Image.fromarray(page), "PNG"))
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
    assert cosine(out, digits[0]) > 0.9


# ---------------------------------------------------------------- formats and modes


def test_bmp_and_lossless_webp_are_exact(digits):
    digit = Image.fromarray(digits[0])
    np.testing.assert_array_equal(preprocess(encode(digit, "BMP")), digits[0])
    np.testing.assert_array_equal(preprocess(encode(digit, "WEBP", lossless=True)), digits[0])


@pytest.mark.parametrize("fmt, params", [("JPEG", {"quality": 90}), ("WEBP", {"quality": 80}), ("GIF", {})])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_lossy_and_palette_formats_decode(digits, fmt, params, mode):
    reference = preprocess(encode(upscaled(digits[0]), "PNG"))
    data = encode(upscaled(255 - digits[0]).convert(mode), fmt, **params)
    assert Image.open(io.BytesIO(data)).format == fmt
    out = preprocess(data)
    assert_mnist_shaped(out)
    assert cosine(out, reference) > 0.95


@pytest.mark.parametrize("fmt, params", [("GIF", {}), ("WEBP", {"lossless": True})])
def test_animation_uses_first_frame(digits, fmt, params):
    first, second = Image.fromarray(digits[0]), Image.fromarray(digits[1])
    data = encode(first, fmt, save_all=True, append_images=[second], duration=100, **params)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    np.testing.assert_array_equal(preprocess(data), digits[0])


def test_transparent_canvas_drawing_is_composited_over_white(digits):
    # Typical browser canvas export: black ink whose alpha is the stroke, fully
    # transparent *black* everywhere else. Read naively, it is black on black.
    for size in (28, 200):
        alpha = np.asarray(upscaled(digits[2], size)) if size != 28 else digits[2]
        rgba = np.zeros((size, size, 4), np.uint8)
        rgba[..., 3] = alpha
        out = preprocess(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
        expected = alpha if size == 28 else preprocess(encode(Image.fromarray(alpha), "PNG"))
        assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1


def test_palette_png_transparency_is_honoured(digits):
    # Index i is grey i, except index 255: black but transparent. Pixels hold 255 - digit,
    # so the background is index 255 and only reads as white if transparency is applied.
    palette = [v for i in range(255) for v in (i, i, i)] + [0, 0, 0]
    img = Image.fromarray(255 - digits[3], "L").convert("P")
    img.putpalette(palette)
    data = encode(img, "PNG", transparency=255)
    reopened = Image.open(io.BytesIO(data))
    assert reopened.mode == "P" and "transparency" in reopened.info
    np.testing.assert_array_equal(preprocess(data), digits[3])


def test_palette_png_without_transparency(digits):
    img = Image.fromarray(255 - digits[4]).convert("P")
    data = encode(img, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "P"
    np.testing.assert_array_equal(preprocess(data), digits[4])


@pytest.mark.parametrize("dark_on_light", [False, True])
def test_sixteen_bit_png_is_scaled_not_clipped(digits, dark_on_light):
    values = (255 - digits[5]) if dark_on_light else digits[5]
    data = encode(Image.fromarray(values.astype(np.uint16) * 257), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    np.testing.assert_array_equal(preprocess(data), digits[5])


def test_exif_orientation_is_applied(digits):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    stored = Image.fromarray(digits[6]).rotate(90, expand=True)
    assert not np.array_equal(np.asarray(stored), digits[6])
    np.testing.assert_array_equal(preprocess(encode(stored, "PNG", exif=exif)), digits[6])


def _as_mode(values: np.ndarray, mode: str) -> Image.Image:
    """values: dark digit on white, uint8."""
    if mode == "I;16":
        return Image.fromarray(values.astype(np.uint16) * 257)
    if mode == "I":
        return Image.fromarray(values.astype(np.int32) * 257)
    if mode == "F":
        return Image.fromarray(values.astype(np.float32))
    if mode == "LA":
        return Image.merge("LA", (Image.fromarray(values), Image.new("L", (values.shape[1], values.shape[0]), 255)))
    return Image.fromarray(values).convert(mode)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGB", "RGBA", "I;16", "I", "F", "1", "CMYK"])
def test_to_mnist_handles_modes(digits, mode):
    values = np.asarray(upscaled(255 - digits[7], 120))
    if mode == "1":  # bilevel: compare with the same bilevel picture, not a dithered one
        values = np.where(values > 127, 255, 0).astype(np.uint8)
    reference = to_mnist(Image.fromarray(values))
    img = _as_mode(values, mode)
    assert img.mode == mode
    out = to_mnist(img)
    assert_mnist_shaped(out)
    assert cosine(out, reference) > 0.99


# ---------------------------------------------------------------- edge cases that succeed


@pytest.mark.parametrize("colour", [0, 255, 128, 240])
def test_blank_image_gives_zeros(colour):
    out = preprocess(encode(Image.new("L", (100, 80), colour), "PNG"))
    assert_mnist_shaped(out)
    assert not out.any()


def test_faint_noise_on_paper_counts_as_blank():
    rng = np.random.default_rng(0)
    paper = np.clip(rng.normal(230, 4, (100, 100)), 0, 255).astype(np.uint8)
    assert not preprocess(encode(Image.fromarray(paper), "PNG")).any()


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (5, 300), (300, 5), (29, 28), (1000, 1000)])
def test_odd_shapes_fit_the_canvas(shape):
    arr = np.zeros(shape, np.uint8)
    h, w = shape
    arr[h // 4 : max(h // 4 + 1, 3 * h // 4), w // 4 : max(w // 4 + 1, 3 * w // 4)] = 255
    out = preprocess(encode(Image.fromarray(arr), "PNG"))
    assert_mnist_shaped(out)
    if shape == (1, 1):  # one white pixel is all border, hence background: blank
        assert not out.any()
        return
    assert out.max() == 255
    rows, cols = np.flatnonzero(out.any(1)), np.flatnonzero(out.any(0))
    assert rows[-1] - rows[0] < 20 and cols[-1] - cols[0] < 20
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5  # symmetric blocks centre exactly


def test_lopsided_ink_is_clipped_inside_the_canvas():
    # A dot at the top left stretches the bounding box; nearly all mass sits in a block at
    # the bottom right, so centring by mass would push the digit off the canvas.
    arr = np.zeros((100, 100), np.uint8)
    arr[10, 10] = 255
    arr[70:90, 70:90] = 255
    out = preprocess(encode(Image.fromarray(arr), "PNG"))
    cy, cx = centre_of_mass(out)
    assert cy > 15 and cx > 15  # could not be centred ...
    assert out.sum() >= 0.95 * 255 * 25  # ... but the whole 5x5 block is still there


# ---------------------------------------------------------------- rejections


def _tiff() -> bytes:
    return encode(Image.new("L", (28, 28), 0), "TIFF")


REJECTIONS = {
    "empty": (lambda: b"", "upload is empty"),
    "text": (lambda: b"hello world", images.UNSUPPORTED),
    "random": (lambda: b"\x00" + random.Random(1).randbytes(2000), images.UNSUPPORTED),
    "tiff": (_tiff, images.UNSUPPORTED),
    "ppm": (lambda: encode(Image.new("L", (28, 28)), "PPM"), images.UNSUPPORTED),
    "svg": (lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28"/>', images.UNSUPPORTED),
    "truncated png": (lambda: (d := encode(upscaled(np.eye(28, dtype=np.uint8) * 255), "PNG"))[: len(d) // 2], images.CORRUPT),
    "png signature only": (lambda: b"\x89PNG\r\n\x1a\n", "invalid PNG header"),
    "zero width": (lambda: crafted_png(0, 28), "zero width or height"),
    "zero height": (lambda: crafted_png(28, 0), "zero width or height"),
    "tiny file, 5000x5000 header": (lambda: crafted_png(5000, 5000), "image is 5000x5000 pixels; the limit is 16777216 pixels"),
    "bomb 10000x10000": (lambda: crafted_png(10000, 10000), "100000000 pixels; the limit is 16777216 pixels"),
    "bomb 20000x20000": (lambda: crafted_png(20000, 20000), "400000000 pixels; the limit is 16777216 pixels"),
    "oversize": (lambda: b"\x89PNG\r\n\x1a\n" + b"\x00" * images.MAX_BYTES, "the limit is 5242880 bytes"),
}


@pytest.mark.parametrize("name", list(REJECTIONS))
def test_rejections(name):
    make, message = REJECTIONS[name]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageError) as excinfo:
            preprocess(make())
    assert message in str(excinfo.value)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_crafted_png_is_otherwise_valid():
    # Guards the rejection tests above: the same crafted header with a sane size does
    # open, so those tests fail for the size and not for a malformed file.
    assert Image.open(io.BytesIO(crafted_png(5000, 5000))).size == (5000, 5000)
    rows = b"".join(b"\x00" + bytes([255 * (2 <= x < 6 and 1 <= y < 7) for x in range(8)]) for y in range(8))
    out = preprocess(crafted_png(8, 8, rows))
    assert out.shape == (28, 28) and out.max() == 255


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP"])
def test_truncated_files_are_rejected_not_half_decoded(digits, fmt):
    data = encode(upscaled(255 - digits[8]).convert("RGB"), fmt)
    for fraction in (0.3, 0.6, 0.95):
        with pytest.raises(ImageError, match="truncated or corrupt"):
            preprocess(data[: int(len(data) * fraction)])


def test_exactly_max_bytes_is_not_rejected_for_size():
    data = encode(Image.new("L", (28, 28)), "PNG")
    data += b"\x00" * (images.MAX_BYTES - len(data))  # trailing junk after IEND
    assert len(data) == images.MAX_BYTES
    assert preprocess(data).shape == (28, 28)


def test_rejects_non_bytes_as_a_programming_error():
    with pytest.raises(TypeError):
        preprocess("not bytes")  # type: ignore[arg-type]


def test_image_error_is_a_value_error():
    assert issubclass(ImageError, ValueError)


# ---------------------------------------------------------------- fuzz


def test_fuzzed_files_only_raise_image_error(digits):
    rng = random.Random(1234)
    grey = Image.fromarray(digits[9])
    sources = [upscaled(255 - digits[9], 64).convert("RGB"), grey, grey.convert("P"), grey.convert("RGBA")]
    seeds = [
        encode(img, fmt, **params)
        for img in sources
        for fmt, params in [("PNG", {}), ("JPEG", {}), ("GIF", {}), ("WEBP", {}), ("WEBP", {"lossless": True}), ("BMP", {})]
        if not (fmt == "JPEG" and img.mode in ("P", "RGBA"))
    ]
    seeds += [
        encode(grey, "GIF", save_all=True, append_images=[Image.fromarray(digits[8])]),
        encode(grey.convert("1"), "BMP"),
        encode(Image.fromarray(digits[9].astype(np.uint16) * 257), "PNG"),
    ]
    outcomes = {"ok": 0, "rejected": 0}
    for i in range(800):
        data = bytearray(rng.choice(seeds))
        how = i % 4
        if how == 0:  # flip a few bytes
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif how == 1:  # truncate
            del data[rng.randrange(1, len(data)) :]
        elif how == 2:  # flip bytes in the header region
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(min(64, len(data)))] = rng.randrange(256)
        else:  # insert or delete a run of bytes
            at = rng.randrange(len(data))
            if rng.random() < 0.5:
                data[at:at] = rng.randbytes(rng.randint(1, 16))
            else:
                del data[at : at + rng.randint(1, 16)]
        try:
            out = preprocess(bytes(data))
        except ImageError:
            outcomes["rejected"] += 1
        else:
            assert_mnist_shaped(out)
            outcomes["ok"] += 1
    # The mutations must exercise both paths, or the test proves little.
    assert outcomes["ok"] > 20 and outcomes["rejected"] > 20, outcomes
