"""The routes beside BentoML's typed endpoints (the page, /docs, /docs.json, /metadata, the v2 protocol and its model repository), and the content types each POST route accepts.

The guard (service/api/guard.py) answers 415 from ``accepts(path)``, for every POST route; nothing else
checks a Content-Type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import webpage
from service.api import openapi
from service.api.current import plane
from service.v2 import repository_rest, rest as v2


@dataclass(frozen=True)
class Accepts:
    """The media types a POST route takes ("" = no Content-Type at all), and what its 415 tells the client to send."""

    media_types: tuple[str, ...]
    advice: str

    def refusal(self, media_type: str) -> str:
        shown = repr(media_type) if len(media_type) <= 60 else repr(media_type[:57] + "...")
        return f"Content-Type {shown if media_type else repr('(none)')} is not accepted here; send {self.advice}"


JSON = Accepts(("application/json",), "application/json")
# The image route takes uploads only: BentoML would otherwise treat a JSON string body as a URL and fetch it.
MULTIPART = Accepts(("multipart/form-data",), "multipart/form-data")
# tritonclient sends no Content-Type at all; the binary tensor data extension sends octet-stream (or none).
V2_INFER = Accepts(("", v2.JSON_TYPE, v2.BINARY_TYPE),
                   f"{v2.JSON_TYPE}, or {v2.BINARY_TYPE} with the {v2.HEADER} header (binary tensor data extension)")
# tritonclient's repository calls send JSON or nothing at all.
V2_REPOSITORY = Accepts(("", v2.JSON_TYPE), v2.JSON_TYPE)
ACCEPTS = {"/temperature": JSON, "/digit": JSON, "/digits": JSON, "/digit/image": MULTIPART}
V2_INFER_PATH = re.compile(r"/v2/models/[^/]+(/versions/[^/]+)?/infer")
V2_REPOSITORY_PATH = re.compile(r"/v2/repository/(index|models/[^/]+/(load|unload))")


def accepts(path: str) -> Accepts | None:
    """What a POST to `path` may send (None: not ours to judge; the router answers 404/405)."""
    path = path.rstrip("/") or "/"
    if V2_INFER_PATH.fullmatch(path):
        return V2_INFER
    if V2_REPOSITORY_PATH.fullmatch(path):
        return V2_REPOSITORY
    return ACCEPTS.get(path)


async def metadata(request: Request) -> Response:
    """GET /metadata: what is loaded, from which files, on which backend and device, and each version's role."""
    return JSONResponse(plane().describe())


def make(generated_openapi: Callable[[], dict[str, Any]]) -> list:
    """Every route; `generated_openapi()` gives BentoML's document of the typed endpoints, which /docs.json corrects
    and completes (service/api/openapi.py), once per worker."""
    document: dict[str, Any] = {}

    async def docs_json(request: Request) -> Response:
        if not document:
            document.update(openapi.fix(generated_openapi()))
        return JSONResponse(document)

    return [Route("/metadata", v2.answered(metadata), methods=["GET"]),
            Route("/docs.json", docs_json, methods=["GET"]),
            *webpage.ROUTES, *v2.ROUTES, *repository_rest.ROUTES]
