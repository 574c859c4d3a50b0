"""Neutral inference requests and answers, as every transport hands them to the data plane (the shape of KServe's ``InferRequest``).

A transport parses its wire format into an ``InferRequest``: the model and version it addresses, its input tensors
and the outputs it asks for. An ``InferInput`` carries its declared name, datatype and shape, and decodes its values
only when the data plane asks (``as_numpy``), after the declaration has been checked against the model's spec:
JSON numbers, HTTP's binary tensor data and gRPC's contents or raw bytes each decode their own way, and name the
place of a bad value in their own terms (``where``, ``position``). The data plane answers an ``InferResponse``, which
the transport encodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

DATATYPES = {"float32": "FP32", "float64": "FP64"}  # metadata.json dtype -> the protocol's datatype
ITEMSIZE = {"FP32": 4, "FP64": 8}
LITTLE_ENDIAN = {"FP32": "<f4", "FP64": "<f8"}


class InferInput:
    """One input tensor as declared; subclasses decode its values (``as_numpy``)."""

    def __init__(self, name: str, datatype: str, shape: list[int] | tuple[int, ...], where: str):
        self.name = name
        self.datatype = datatype
        self.shape = tuple(shape)
        self.where = where  # how messages name its values: "inputs[0].data", "raw_input_contents[0]", ...

    def as_numpy(self) -> np.ndarray:
        """The values, flat (row-major) or shaped, as numbers; ServingError naming the first that is not one."""
        raise NotImplementedError

    def position(self, i: int) -> str:
        """Where the i-th value (row-major) lies, as messages say it: '[i]' for flat data."""
        return f"[{i}]"

    def refusal(self) -> str | None:
        """A refusal the transport found while parsing, to be made once the declaration has passed (gRPC: values in
        another datatype's field), or None."""
        return None


class ArrayInput(InferInput):
    """An input whose values are already an array (raw bytes decoded by the transport, or an in-process caller's)."""

    def __init__(self, name: str, datatype: str, shape: list[int] | tuple[int, ...], values: np.ndarray,
                 where: str = "inputs[0]"):
        super().__init__(name, datatype, shape, where)
        self.values = values

    def as_numpy(self) -> np.ndarray:
        return self.values


@dataclass
class RequestedOutput:
    name: str
    binary: bool | None = None  # None: the request's default


@dataclass
class InferRequest:
    model: str
    version: str | None  # None: the server chooses (the default version, or the canary)
    inputs: list[InferInput]
    outputs: list[RequestedOutput] | None = None  # None: every output
    id: str | None = None
    binary_output: bool = False  # the default of every output (binary_data_output)
    key: str | None = None  # the routing key (X-Routing-Key): a client with one key stays on one version


@dataclass
class OutputTensor:
    name: str
    datatype: str
    array: np.ndarray
    binary: bool = False

    def little_endian_bytes(self) -> bytes:
        return np.ascontiguousarray(self.array, dtype=LITTLE_ENDIAN[self.datatype]).tobytes()


@dataclass
class InferResponse:
    model: str
    version: str
    outputs: list[OutputTensor]
    id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
