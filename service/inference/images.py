"""Decode an uploaded image file and preprocess it into a 28x28 MNIST-style uint8 array.

Rules (each one is tested in tests/test_images.py):

* Accepted formats: PNG, JPEG, BMP, GIF (first frame only) and WebP; anything else is
  rejected, as are empty uploads, uploads over ``MAX_BYTES`` and images that declare more
  than ``MAX_PIXELS`` pixels (checked from the header, before any pixel is decoded).
* Truncated or corrupt files are rejected; a partially decoded image is never used.
* EXIF orientation (phone photos) is applied.
* Colour becomes greyscale (ITU-R 601 luma). Transparent pixels are composited over WHITE
  first, so dark ink drawn on a transparent canvas reads as dark-on-light.
* 16-bit images (modes ``I;16*`` and ``I``) are scaled from 0..65535; ``F`` is clipped to 0..255.
* Polarity: if the median of the outermost 2-pixel ring is > 127 the background is light
  and the image is inverted, so that the digit is white on black like MNIST (all sizes).
* A 28x28 image is then returned unchanged, so MNIST images round-trip exactly.
* Any other size is normalised the way MNIST was built: the background level (median of
  the ring) is subtracted; if nothing is brighter than ``MIN_INK`` the image is blank and
  all zeros are returned (not an error); pixels at or below ``INK_FRACTION`` of the
  brightest are zeroed (paper texture, JPEG noise); the ink bounding box is cropped,
  resized (Lanczos, anti-aliased, aspect ratio kept) to fit 20x20, stretched so the
  brightest pixel is 255, and pasted into a black 28x28 canvas so that its centre of mass
  lands on pixel (14, 14), the shift rounded and clipped so the digit stays inside.
"""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
from PIL import Image, ImageOps


class ImageError(ValueError):
    """The upload is not a usable image; the message is meant for the API client."""


MAX_BYTES = 5 * 1024 * 1024  # documented upload limit
MAX_PIXELS = 4096 * 4096  # decompression-bomb guard, checked before decoding pixels
ACCEPTED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")

SIZE = 28  # MNIST canvas
BOX = 20  # MNIST digits were fitted into 20x20 ...
CENTRE = 14.0  # ... and centred by centre of mass (MNIST test set mean: 13.99, 14.01)
RING = 2  # border width (pixels) used to judge the background
MIN_INK = 32  # below this (after background removal) an image counts as blank
INK_FRACTION = 0.1  # pixels <= 10% of the brightest are background

UNSUPPORTED = "unsupported or unrecognised image format; send PNG, JPEG, BMP, GIF or WebP"
CORRUPT = "image data is truncated or corrupt"

# File signatures of the accepted formats. Pillow reports a damaged header the same way as
# an unknown format; these let us tell the client "your PNG is broken" instead.
_SIGNATURES = {
    "PNG": lambda b: b.startswith(b"\x89PNG\r\n\x1a\n"),
    "JPEG": lambda b: b.startswith(b"\xff\xd8\xff"),
    "BMP": lambda b: b.startswith(b"BM"),
    "GIF": lambda b: b[:6] in (b"GIF87a", b"GIF89a"),
    "WebP": lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP",
}

_ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}  # not LAB: its "A" band is a colour axis
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def load_image(data: bytes) -> Image.Image:
    """Decode ``data`` fully (first frame) and return it; raise ImageError if unusable."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    size = len(data)
    if size == 0:
        raise ImageError("no image data received (the upload is empty)")
    if size > MAX_BYTES:
        raise ImageError(f"image file is {size} bytes; the limit is {MAX_BYTES} bytes (5 MiB)")
    data = bytes(data)

    # Pillow warns (89M+ pixels) or raises (179M+) about decompression bombs inside
    # Image.open; turn the warning into an exception so that neither escapes, and both
    # become ImageError. (catch_warnings is not thread-safe: overlapping requests can
    # leave this one filter installed, which only makes Pillow stricter.)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS))
        except Image.UnidentifiedImageError:
            fmt = next((name for name, match in _SIGNATURES.items() if match(data)), None)
            if fmt is None:
                raise ImageError(UNSUPPORTED) from None
            raise ImageError(
                f"invalid {fmt} header: the file is truncated or corrupt,"
                " or declares a zero width or height"
            ) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            # Pillow's message gives only the pixel count, not the dimensions.
            found = re.search(r"\((\d+) pixels\)", str(exc))
            declared = f"{found.group(1)} pixels" if found else "too many pixels"
            raise ImageError(
                f"image declares {declared}; the limit is {MAX_PIXELS} pixels"
            ) from None
        except Exception as exc:  # any other failure while parsing a header = bad file
            raise ImageError(CORRUPT) from exc

        # Image.open has read only the header: refuse huge images before decoding them.
        width, height = img.size
        if width <= 0 or height <= 0:
            raise ImageError(f"image has zero width or height ({width}x{height})")
        if width * height > MAX_PIXELS:
            raise ImageError(
                f"image is {width}x{height} pixels; the limit is {MAX_PIXELS} pixels"
            )

        try:
            # Never set ImageFile.LOAD_TRUNCATED_IMAGES: a half-decoded digit would be
            # classified silently. Decoders of untrusted data fail in many ways (OSError,
            # SyntaxError, ValueError, struct.error, EOFError, IndexError, ...), so any
            # exception here means the file is bad, not that the service is.
            img.load()  # first frame only for GIF/WebP animations
            ImageOps.exif_transpose(img, in_place=True)
        except Exception as exc:
            raise ImageError(CORRUPT) from exc
    return img


def to_mnist(img: Image.Image) -> np.ndarray:
    """Return ``img`` as a (28, 28) C-contiguous uint8 array, white digit on black."""
    grey = _to_grey(img)

    # Light background (median of the outer ring) means dark ink: invert to MNIST polarity.
    ring = np.ones(grey.shape, dtype=bool)
    if grey.shape[0] > 2 * RING and grey.shape[1] > 2 * RING:
        ring[RING:-RING, RING:-RING] = False
    if np.median(grey[ring]) > 127:
        grey = 255 - grey

    if grey.shape == (SIZE, SIZE):
        return np.ascontiguousarray(grey)  # already MNIST-shaped: keep it bit-exact

    background = float(np.median(grey[ring]))  # paper tint, or a dark room's grey
    peak = float(grey.max()) - background
    if peak < MIN_INK:
        return np.zeros((SIZE, SIZE), dtype=np.uint8)  # blank: nothing to classify
    is_ink = grey > background + INK_FRACTION * peak
    rows = np.flatnonzero(is_ink.any(axis=1))
    cols = np.flatnonzero(is_ink.any(axis=0))
    crop = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    # Crop before going to float: a 4096x4096 upload need not be copied at 4 bytes/pixel.
    ink = np.where(is_ink[crop], grey[crop].astype(np.float32) - background, np.float32(0))

    h, w = ink.shape
    scale = BOX / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    # Resize in float ("F" mode) so nothing is quantised before centring; Lanczos is
    # anti-aliased when shrinking. Clip its small ringing overshoots.
    small = Image.fromarray(ink).resize((new_w, new_h), Image.Resampling.LANCZOS)
    digit = np.clip(np.asarray(small, dtype=np.float32), 0, None)
    # Stretch after resizing (shrinking greys thin strokes): MNIST strokes peak at 255.
    digit *= 255.0 / max(float(digit.max()), 1e-6)

    # Place the digit so that its centre of mass is at (14, 14), staying inside the canvas.
    mass = float(digit.sum())
    if mass <= 0:  # Lanczos lobes cancelled every dot (pathological): nothing left
        return np.zeros((SIZE, SIZE), dtype=np.uint8)
    cy = float((digit.sum(axis=1) * np.arange(new_h)).sum()) / mass
    cx = float((digit.sum(axis=0) * np.arange(new_w)).sum()) / mass
    top = min(max(int(np.floor(CENTRE - cy + 0.5)), 0), SIZE - new_h)
    left = min(max(int(np.floor(CENTRE - cx + 0.5)), 0), SIZE - new_w)

    canvas = np.zeros((SIZE, SIZE), dtype=np.float32)
    canvas[top : top + new_h, left : left + new_w] = digit
    return np.ascontiguousarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8))


def preprocess(data: bytes) -> np.ndarray:
    """Decode an uploaded image file and return its (28, 28) uint8 MNIST-style array."""
    return to_mnist(load_image(data))


def _to_grey(img: Image.Image) -> np.ndarray:
    """Flatten ``img`` to a 2-D uint8 luminance array (transparency over white)."""
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        # Pillow's own conversion to L clips 16-bit values at 255 (a white image would
        # survive, a mid-grey one would not); scale the full 16-bit range instead.
        values = np.asarray(img).astype(np.float64) / 257.0
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    if mode == "F":  # no accepted file format yields F; follow Pillow's F->L (clip)
        return np.clip(np.rint(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8)
    if mode in _ALPHA_MODES or img.has_transparency_data:
        rgba = img.convert("RGBA")  # also resolves palette and tRNS transparency
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    try:
        grey = img.convert("L")
    except ValueError:  # exotic modes without a direct path to L
        try:
            grey = img.convert("RGB").convert("L")
        except ValueError as exc:
            raise ImageError(f"unsupported colour mode {mode}") from exc
    return np.asarray(grey, dtype=np.uint8).copy()
