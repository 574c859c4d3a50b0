"""The model repository extension of the v2 protocol over HTTP, as Triton serves it and tritonclient.http calls it (``get_model_repository_index``, ``load_model``, ``unload_model``): thin glue to the worker's repository (service/repository.py says what each call does).

    POST /v2/repository/index                   {"ready": bool}?   -> [{"name", "version", "state", "reason"}, ...]
    POST /v2/repository/models/{name}/load      {"parameters": {"config": "<JSON>"}}?  -> 200 {}
    POST /v2/repository/models/{name}/unload    {"parameters": {"version": "<v>"}}?    -> 200 {}

Every call needs an admin token (service/core/auth.py: 403 when the server has none configured). A body is optional
(tritonclient sends none to the index); when present it must be a JSON object whose ``parameters`` values are
scalars.
"""

from __future__ import annotations

import json
from typing import Any

import bentoml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.core.errors import Kind, fail
from service.v2.rest import answered


def repository() -> Any:
    found = getattr(bentoml.get_current_service(), "repository", None)
    if found is None:
        fail("the models are not loaded yet; retry in a moment", Kind.UNAVAILABLE)
    return found


async def body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as e:
        fail(f"the body is not JSON ({e}); send a JSON object, or nothing")
    if not isinstance(data, dict):
        fail("the body must be a JSON object")
    return data


async def parameters(request: Request) -> dict[str, Any]:
    data = await body(request)
    unknown = set(data) - {"parameters"}
    if unknown:
        fail(f"unknown field {sorted(unknown)[0]!r}: the body takes parameters only")
    params = data.get("parameters") or {}
    if not isinstance(params, dict) or not all(isinstance(v, (str, int, float, bool)) for v in params.values()):
        fail("parameters must be an object of strings, numbers and booleans")
    return params


async def index(request: Request) -> Response:
    data = await body(request)
    unknown = set(data) - {"ready", "repository_name"}
    if unknown:
        fail(f"unknown field {sorted(unknown)[0]!r}: the body takes ready (true: only the versions serving)")
    ready = data.get("ready", False)
    if not isinstance(ready, bool):
        fail("ready: expected true or false")
    return JSONResponse(repository().index(ready_only=ready))


async def load(request: Request) -> Response:
    await repository().load(request.path_params["name"], await parameters(request))
    return JSONResponse({})


async def unload(request: Request) -> Response:
    await repository().unload(request.path_params["name"], await parameters(request))
    return JSONResponse({})


ROUTES = [
    Route("/v2/repository/index", answered(index), methods=["POST"]),
    Route("/v2/repository/models/{name}/load", answered(load), methods=["POST"]),
    Route("/v2/repository/models/{name}/unload", answered(unload), methods=["POST"]),
]
