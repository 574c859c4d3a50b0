"""The Open Inference Protocol's parameters that this server reads or refuses, for both transports; every other parameter is ignored.

* ``binary_data_size`` (an input's: binary tensor data extension), ``binary_data`` (an output's) and
  ``binary_data_output`` (the request's) are read.
* The classification extension's and the shared-memory extensions' are refused: ignoring them would answer wrongly.
"""

from __future__ import annotations

from typing import Any, Mapping

from service.core.errors import fail, short

BINARY_SIZE = "binary_data_size"
BINARY_OUTPUT = "binary_data"
BINARY_RESPONSE = "binary_data_output"
UNSUPPORTED = {"classification": "the classification extension",
               "shared_memory_region": "the shared-memory extensions",
               "shared_memory_byte_size": "the shared-memory extensions",
               "shared_memory_offset": "the shared-memory extensions"}
ACTED_ON = frozenset({BINARY_SIZE, BINARY_OUTPUT, BINARY_RESPONSE, *UNSUPPORTED})


def parameter(parameters: Mapping[str, Any] | None, key: str, where: str) -> Any:
    """The value of `key` (None when absent), type-checked; the parameters this server cannot honour are refused."""
    for name in parameters or ():
        if name in UNSUPPORTED:
            fail(f"{where}.parameters.{name}: {UNSUPPORTED[name]} is not supported by this server")
    value = (parameters or {}).get(key)
    if key == BINARY_SIZE and value is not None and (type(value) is not int or value < 0):
        fail(f"{where}.parameters.{key}: expected a number of bytes (an integer >= 0), got {short(value)}")
    if key != BINARY_SIZE and value is not None and type(value) is not bool:
        fail(f"{where}.parameters.{key}: expected true or false, got {short(value)}")
    return value
