"""Which loaded version answers a request: the one it names, else the canary for the canary's share, else the default; and whether a copy of it runs on the shadow version.

A ``Route`` is one model's versions in this worker and their roles, as the serving state declares them
(artifacts.serving): every version loaded, the default, optionally a canary with a weight and a shadow with a
share. Routes are immutable; a change of the serving state builds new ones and swaps them in whole, so a request
sees one state from start to end.

The canary's share of the requests that name no version: with a routing key (``X-Routing-Key``, gRPC metadata
``x-routing-key``), ``key_point`` hashes the model's name and the key with SHA-256 (the same on every worker and
replica, unlike Python's ``hash()``), so a client keeps to one side for as long as the weight stays; without one,
each request draws. The shadow's share is drawn per request among those the default answers.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Callable

from service.core.errors import Kind, ServingError, short
from service.inference.versions import Version

DEFAULT, CANARY, PINNED, SHADOW = "default", "canary", "pinned", "shadow"  # how a version came to answer


def key_point(model: str, key: str) -> float:
    """A point in [0, 1) fixed by the model's name and the routing key."""
    digest = hashlib.sha256(f"{model}\0{key}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Route:
    """One model's loaded versions and their roles."""

    model: str
    default: Version
    versions: dict[str, Version]  # every version loaded, default, canary and shadow included
    canary: Version | None = None
    weight: float = 0.0  # share of unaddressed requests the canary answers
    shadow: Version | None = None
    share: float = 0.0  # share of the default's requests copied to the shadow
    draw: Callable[[], float] = field(default=random.random, compare=False)

    def choose(self, version: str | None, key: str | None = None) -> tuple[Version, str]:
        """(the version that answers, how it was chosen); 404 for a version not loaded, naming those that are."""
        if version is not None:
            found = self.versions.get(version)
            if found is None:
                raise ServingError(f"model {self.model!r} has no version {short(version)} loaded; it serves "
                                   f"{self.describe()}", Kind.NOT_FOUND)
            return found, PINNED
        if self.canary is not None and self.weight > 0:
            point = key_point(self.model, key) if key else self.draw()
            if point < self.weight:
                return self.canary, CANARY
        return self.default, DEFAULT

    def shadows(self, role: str) -> Version | None:
        """The shadow version when a copy of a request answered as `role` should run on it, else None."""
        if self.shadow is None or role != DEFAULT or self.share <= 0:
            return None
        return self.shadow if self.share >= 1 or self.draw() < self.share else None

    def roles(self) -> dict[str, list[str]]:
        """version -> its roles ("default", "canary", "shadow"; [] for a version loaded only to be named)."""
        out: dict[str, list[str]] = {v: [] for v in self.versions}
        out[self.default.version].append(DEFAULT)
        if self.canary is not None:
            out[self.canary.version].append(CANARY)
        if self.shadow is not None:
            out[self.shadow.version].append(SHADOW)
        return out

    def describe(self) -> str:
        """'73bbf6a747230b2a (default), 2fffc2f2f5dfabca (canary)'."""
        return ", ".join(f"{v} ({', '.join(r)})" if r else v for v, r in self.roles().items())
