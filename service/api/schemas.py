"""Typed request and response bodies of the HTTP API (pydantic), including every input check."""

from __future__ import annotations

import json
import pathlib
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, GetJsonSchemaHandler, ValidationError, model_validator
from pydantic_core import PydanticCustomError, core_schema
from starlette.datastructures import UploadFile

import artifacts
from service.api import shapes

MAX_READINGS = artifacts.TEMPERATURE.max_rows
MAX_IMAGES = artifacts.DIGITS.max_rows
SIDE = artifacts.DIGITS.input.shape[-1]

# strict: "35.7" and true are not readings; allow_inf_nan=False: NaN/Infinity literals are refused.
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class Strict(BaseModel):
    """Every request body: a misspelt field is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


def model_choice(task: artifacts.Task, what: str) -> tuple[Any, str]:
    """The `model` field of `task`'s endpoints (its registry choices, as a Literal) and its default (the first)."""
    chosen = artifacts.choices(task)
    description = f"Which {what}: " + ", ".join(f"'{c}' ({m.about})" for c, m in chosen.items()) + "."
    return Annotated[Literal[tuple(chosen)], Field(description=description)], next(iter(chosen))


TemperatureModel, DEFAULT_TEMPERATURE_MODEL = model_choice(artifacts.TEMPERATURE, "regressor")
DigitModel, DEFAULT_DIGIT_MODEL = model_choice(artifacts.DIGITS, "classifier")
VERSION_DOC = ("A version of the chosen model to answer with (GET /metadata lists those loaded; 404 for another); "
               "default: the model's default version, or its canary for the canary's share of requests.")
Version = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$", description=VERSION_DOC)]  # absent (not null): the default


class TemperatureRequest(Strict):
    readings: list[Finite] = Field(
        min_length=1, max_length=MAX_READINGS,
        description="Raw thermometer readings in its unknown unit (t_u).", examples=[[35.7, 55.9]],
    )
    model: TemperatureModel = DEFAULT_TEMPERATURE_MODEL
    version: Version = None


class TemperatureResponse(BaseModel):
    celsius: list[float] = Field(description="One temperature in °C per reading, in order.")
    model: str = Field(description="Name of the model that answered.", examples=["temperature-linear"])
    version: str = Field(description="Version (content hash) of that model.")


MaxValue = Annotated[float, Field(gt=0, le=65535, strict=True, allow_inf_nan=False)]
MAX_VALUE_DOC = "Value of full ink: 255 for 0-255 integers, 1 for 0-1 floats."


def check_shape(image: Any, where: str) -> None:
    """Refuse anything but 28 rows of 28 values, with a message that says what arrived instead.

    A flat list of 784 numbers is refused (its row order would be a guess).
    """
    if isinstance(image, list) and len(image) == SIDE * SIDE and not isinstance(image[0], list):
        raise ValueError(f"{where}: got a flat list of {SIDE * SIDE} numbers; send {SIDE} rows of {SIDE} numbers")
    try:
        shapes.flatten(image, (SIDE, SIDE))
    except shapes.ShapeMismatch as e:
        if not e.path:
            got = len(e.got) if isinstance(e.got, list) else e.got_text()
            raise ValueError(f"{where}: expected {SIDE} rows, got {got}") from None
        raise ValueError(f"{where}: row {e.path[0]} has {e.got_text('values')}, expected {SIDE} values") from None


Pixel = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0)]
# Shapes are checked by length in pydantic's core (fast: no Python per pixel), and the first bad value ends
# validation (fail_fast): a 16 MiB body of bad values costs milliseconds, not 800,000 error objects.
Row = Annotated[list[Pixel], Field(min_length=SIDE, max_length=SIDE, fail_fast=True)]
Image28 = Annotated[list[Row], Field(min_length=SIDE, max_length=SIDE, fail_fast=True)]


def as_array(images: list) -> np.ndarray:
    """Validated pixels as a float64 array, made once: the max check and the model input both use it."""
    return np.asarray(images, dtype=np.float64)


class Images(Strict):
    """What /digit and /digits share: validated pixel arrays and the max_value rule, with readable shape errors."""

    max_value: MaxValue = Field(255, description=MAX_VALUE_DOC)
    model: DigitModel = DEFAULT_DIGIT_MODEL
    version: Version = None
    _field: ClassVar[str]

    @classmethod
    def shape_errors(cls, data: dict) -> None:
        """Raise ValueError saying how the images in `data` are misshapen (called only when validation failed)."""
        raise NotImplementedError

    @classmethod
    def model_validate_json(cls, json_data, **kwargs):
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError as error:
            # Say "expected 28 rows, got 27" rather than pydantic's list-length wording, one error, not one per row.
            if any(e["type"] == "json_invalid" for e in error.errors()):
                # Not JSON, or nested past pydantic's depth limit: pydantic said it. Python's own parser goes
                # deeper on 3.13 than on 3.11, so asking it would make the answer depend on the interpreter.
                raise
            try:
                data = json.loads(json_data)
            except (ValueError, RecursionError):  # not JSON, or nested deeper than Python parses: pydantic said it
                raise error from None
            try:
                if isinstance(data, dict) and cls._field in data:
                    cls.shape_errors(data[cls._field])
            except ValueError as shape:
                raise ValidationError.from_exception_data(cls.__name__, [{
                    "type": "value_error", "loc": (cls._field,), "input": "...",
                    "ctx": {"error": shape}}]) from None
            raise

    @model_validator(mode="after")
    def _range(self):
        pixels = getattr(self, self._field)
        top = pixels.max()
        if top > self.max_value:
            raise ValueError(f"pixel value {top:g} is above max_value={self.max_value:g} "
                             "(set max_value to match your data)")
        return self


class DigitRequest(Images):
    pixels: Annotated[Image28, AfterValidator(as_array)] = Field(
        description="28 rows of 28 grey levels, white digit on black (as MNIST).")
    _field = "pixels"

    @classmethod
    def shape_errors(cls, pixels: Any) -> None:
        check_shape(pixels, "pixels")


class DigitsRequest(Images):
    images: Annotated[list[Image28], Field(min_length=1, max_length=MAX_IMAGES, fail_fast=True),
                      AfterValidator(as_array)] = Field(
        description=f"1 to {MAX_IMAGES} images, each 28 rows of 28 grey levels.")
    _field = "images"

    @classmethod
    def shape_errors(cls, images: Any) -> None:
        if not isinstance(images, list):
            return  # pydantic's own message says it
        if not 1 <= len(images) <= MAX_IMAGES:  # the count first: a million images are not walked
            raise ValueError(f"images: send 1 to at most {MAX_IMAGES} images per request, got {len(images)}")
        for i, image in enumerate(images):
            check_shape(image, f"images[{i}]")


def to_batch(images, max_value: float) -> np.ndarray:
    """Validated images (arrays or nested lists) -> (N, 1, 28, 28) float32 in [0, 1], the exported model's input."""
    # Divide in float64: a max_value below float32's range (e.g. 5e-324) would become 0 and give NaN.
    return (np.asarray(images, dtype=np.float64) / max_value).astype(np.float32).reshape(-1, 1, SIDE, SIDE)


class DigitPrediction(BaseModel):
    digit: int = Field(ge=0, le=9, description="The most probable digit.")
    confidence: float = Field(description="Its probability.")
    probabilities: list[float] = Field(min_length=10, max_length=10, description="P(digit) for 0..9.")
    model: str = Field(description="Name of the model that answered.", examples=["mnist-fc"])
    version: str = Field(description="Version (content hash) of that model.")


class DigitImagePrediction(DigitPrediction):
    pixels: list[list[int]] = Field(
        min_length=SIDE, max_length=SIDE,
        description="The 28x28 image the model saw after preprocessing: 28 rows of 28 grey levels 0-255, "
                    "white digit on black (service/images.py).")


class Upload(pathlib.PurePosixPath):
    """An uploaded file, kept in memory: its name is the path, its bytes are ``.data``.

    BentoML takes any field typed as a path as a multipart file upload, and for ``pathlib.Path`` writes
    each upload to a new temporary file, which is listed and deleted after the request: ~40 % of an
    upload request's time on the event loop (docs/decisions/uploads-in-memory.md). This path type keeps the
    bytes that Starlette has already read into memory instead. A client may still pass a local file's path.
    """

    data: bytes

    @classmethod
    def of(cls, data: bytes, name: str = "upload") -> "Upload":
        upload = cls(pathlib.PurePosixPath(name or "upload").name or "upload")
        upload.data = data
        return upload

    @classmethod
    def _validate(cls, value: Any) -> "Upload":
        if isinstance(value, Upload):
            return value
        if isinstance(value, UploadFile):
            value.file.seek(0)
            return cls.of(value.file.read(), value.filename or "upload")
        if isinstance(value, (bytes, bytearray)):
            return cls.of(bytes(value))
        if isinstance(value, pathlib.PurePath):  # in-process callers and clients with a local file
            return cls.of(pathlib.Path(value).read_bytes(), value.name)
        raise PydanticCustomError("upload_type", "expected an uploaded file")

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate, serialization=core_schema.plain_serializer_function_ser_schema(lambda u: u.data))

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> dict:
        # What BentoML's own file fields say in /schema.json, so that its clients send this field as a file.
        return {"type": "file", "format": "image"} if handler.mode == "validation" else {"type": "string", "format": "binary"}
