"""The one error every transport answers: ``ServingError(message, kind)``, and the one table that maps its kind to an HTTP status and a gRPC status code.

A refusal is a client's mistake or a state of the server (4xx, 503, 504), never a bug: its message is one readable
sentence meant for the client, and ``headers`` carry what the client needs beside it (``retry-after``,
``www-authenticate``), sent as HTTP headers or as gRPC trailing metadata. Anything else raised while answering is a
bug: 500 / INTERNAL, with the details in the log only.
"""

from __future__ import annotations

import enum
from typing import NoReturn


class Kind(enum.Enum):
    """What went wrong, as (HTTP status, gRPC status code name)."""

    INVALID = (400, "INVALID_ARGUMENT")
    UNAUTHENTICATED = (401, "UNAUTHENTICATED")
    FORBIDDEN = (403, "PERMISSION_DENIED")
    NOT_FOUND = (404, "NOT_FOUND")
    TIMEOUT = (408, "DEADLINE_EXCEEDED")  # the body did not arrive in time (HTTP only)
    CONFLICT = (409, "FAILED_PRECONDITION")  # the change cannot be made in the server's present state
    TOO_LARGE = (413, "RESOURCE_EXHAUSTED")
    MEDIA_TYPE = (415, "INVALID_ARGUMENT")
    OVERLOADED = (429, "RESOURCE_EXHAUSTED")
    HEAD_TOO_LARGE = (431, "INVALID_ARGUMENT")
    UNAVAILABLE = (503, "UNAVAILABLE")
    DEADLINE = (504, "DEADLINE_EXCEEDED")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def grpc_code(self) -> str:
        """The name of the grpc.StatusCode member."""
        return self.value[1]


BY_STATUS = {kind.status: kind for kind in Kind}
RETRY_AFTER = (("retry-after", "1"),)


class ServingError(Exception):
    """A request the server refuses: `message` is the answer's one sentence, `headers` (lower-case names) go with it."""

    def __init__(self, message: str, kind: Kind = Kind.INVALID, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.kind = kind
        self.headers = headers

    @property
    def status(self) -> int:
        return self.kind.status


def fail(message: str, kind: Kind = Kind.INVALID) -> NoReturn:
    raise ServingError(message, kind)


def short(value: object) -> str:
    """repr() for an error message, at most about 60 characters (a name can be megabytes long)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
