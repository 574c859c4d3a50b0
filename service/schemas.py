"""Typed request and response bodies of the HTTP API (pydantic), including every input check."""

from __future__ import annotations

import pathlib
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, field_validator, model_validator
from pydantic_core import PydanticCustomError, core_schema
from starlette.datastructures import UploadFile

MAX_READINGS = 10_000
MAX_IMAGES = 1_024
SIDE = 28

# strict: "35.7" and true are not readings; allow_inf_nan=False: NaN/Infinity literals are refused.
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently ignored


class TemperatureRequest(Strict):
    readings: list[Finite] = Field(
        min_length=1, max_length=MAX_READINGS,
        description="Raw thermometer readings in its unknown unit (t_u).", examples=[[35.7, 55.9]],
    )
    model: Literal["linear", "mlp"] = Field("linear", description="Which regressor to use.")


class TemperatureResponse(BaseModel):
    celsius: list[float] = Field(description="One temperature in °C per reading, in order.")
    model: str = Field(description="Name of the model that answered.", examples=["temperature-linear"])
    version: str = Field(description="Version (content hash) of that model.")


MaxValue = Annotated[float, Field(gt=0, le=65535, strict=True, allow_inf_nan=False)]
MAX_VALUE_DOC = "Value of full ink: 255 for 0-255 integers, 1 for 0-1 floats."


def check_shape(image: Any, where: str) -> None:
    """Refuse anything but 28 rows of 28 values, with a message that says what arrived instead.

    Runs before element validation, so a wrongly shaped image gets one clear error instead of one
    per pixel; a flat list of 784 numbers is refused (its row order would be a guess).
    """
    if not isinstance(image, list):
        raise ValueError(f"{where}: expected a list of {SIDE} rows, got {type(image).__name__}")
    if len(image) == SIDE * SIDE and not isinstance(image[0], list):
        raise ValueError(f"{where}: got a flat list of {SIDE * SIDE} numbers; send {SIDE} rows of {SIDE} numbers")
    if len(image) != SIDE:
        raise ValueError(f"{where}: expected {SIDE} rows, got {len(image)}")
    for r, row in enumerate(image):
        if not isinstance(row, list) or len(row) != SIDE:
            got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
            raise ValueError(f"{where}: row {r} has {got}, expected {SIDE} values")


def check_max(images: list[list[list[float]]], max_value: float) -> None:
    """Every pixel must be <= max_value (>= 0 is checked per value by the field type)."""
    top = max(max(row) for image in images for row in image)
    if top > max_value:
        raise ValueError(f"pixel value {top:g} is above max_value={max_value:g} (set max_value to match your data)")


Pixel = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0)]


class DigitRequest(Strict):
    pixels: list[list[Pixel]] = Field(description="28 rows of 28 grey levels, white digit on black (as MNIST).")
    max_value: MaxValue = Field(255, description=MAX_VALUE_DOC)

    @field_validator("pixels", mode="before")
    @classmethod
    def _shape(cls, value: Any) -> Any:
        check_shape(value, "pixels")
        return value

    @model_validator(mode="after")
    def _range(self) -> "DigitRequest":
        check_max([self.pixels], self.max_value)
        return self


class DigitsRequest(Strict):
    images: list[list[list[Pixel]]] = Field(
        min_length=1, max_length=MAX_IMAGES, description=f"1 to {MAX_IMAGES} images, each 28 rows of 28 grey levels.")
    max_value: MaxValue = Field(255, description=MAX_VALUE_DOC)

    @field_validator("images", mode="before")
    @classmethod
    def _shape(cls, value: Any) -> Any:
        # Count first: 100,000 images are refused by max_length without walking them.
        if isinstance(value, list) and 0 < len(value) <= MAX_IMAGES:
            for i, image in enumerate(value):
                check_shape(image, f"images[{i}]")
        return value

    @model_validator(mode="after")
    def _range(self) -> "DigitsRequest":
        check_max(self.images, self.max_value)
        return self


def to_batch(images: list, max_value: float) -> np.ndarray:
    """Validated images -> (N, 1, 28, 28) float32 in [0, 1], the exported model's input."""
    # Divide in float64: a max_value below float32's range (e.g. 5e-324) would become 0 and give NaN.
    return (np.asarray(images, dtype=np.float64) / max_value).astype(np.float32).reshape(-1, 1, SIDE, SIDE)


class DigitPrediction(BaseModel):
    digit: int = Field(ge=0, le=9, description="The most probable digit.")
    confidence: float = Field(description="Its probability.")
    probabilities: list[float] = Field(min_length=10, max_length=10, description="P(digit) for 0..9.")


class DigitImagePrediction(DigitPrediction):
    pixels: list[list[int]] = Field(
        min_length=SIDE, max_length=SIDE,
        description="The 28x28 image the model saw after preprocessing: 28 rows of 28 grey levels 0-255, "
                    "white digit on black (service/images.py).")


class Upload(pathlib.PurePosixPath):
    """An uploaded file, kept in memory: its name is the path, its bytes are ``.data``.

    BentoML takes any field typed as a path as a multipart file upload, and for ``pathlib.Path`` writes
    each upload to a new temporary file, which is listed and deleted after the request: ~40 % of an
    upload request's time on the event loop (measured, docs/benchmarks.md). This path type keeps the
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
