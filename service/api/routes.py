"""The service's routes beside BentoML's typed endpoints (mounted at the root), and the content types each POST route takes."""

from __future__ import annotations

import bentoml
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

JSON = ("application/json",)
MULTIPART = ("multipart/form-data",)
# The image route takes uploads only: BentoML would otherwise treat a JSON string body as a URL and fetch it.
CONTENT_TYPES = {"/temperature": JSON, "/digit": JSON, "/digits": JSON, "/digit/image": MULTIPART}
# v2: POST /v2/models/.../infer is not listed: it takes application/json, application/octet-stream or no
# Content-Type at all (tritonclient sends none), so service/v2.py answers the 415 itself.


def content_types(path: str) -> tuple[str, ...] | None:
    """The media types a POST to `path` may send (None: not ours to judge; the router answers 404/405)."""
    return CONTENT_TYPES.get(path.rstrip("/") or "/")


async def metadata(request: Request) -> JSONResponse:
    """GET /metadata: what is loaded, from which files, on which backend and device."""
    return JSONResponse(bentoml.get_current_service().describe())


from service import v2, webpage  # noqa: E402  (v2: the Open Inference Protocol, service/v2.py)

ROUTES = [Route("/metadata", metadata, methods=["GET"]), *webpage.ROUTES, *v2.ROUTES]
