"""The worker's data plane, as the HTTP routes beside BentoML's endpoints reach it: through BentoML's current service instance."""

from __future__ import annotations

import bentoml
from bentoml.exceptions import BentoMLException

from service.core.errors import Kind, fail
from service.core.plane import DataPlane


def plane() -> DataPlane:
    """This worker's data plane; ServingError (503) before the service instance exists."""
    try:
        found = bentoml.get_current_service().plane
    except (BentoMLException, AttributeError):
        found = None
    if found is None:
        fail("the models are not loaded yet; retry in a moment", Kind.UNAVAILABLE)
    return found
