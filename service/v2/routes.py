"""The Open Inference Protocol v2 (KServe v2 REST, as spoken by Triton, KServe and MLServer): thin HTTP glue from its routes to the tensors (service/v2/tensors.py) and the models.

Routes (mounted at the root by service/api/routes.py), beside the typed endpoints::

    GET  /v2                                   server metadata
    GET  /v2/health/live, /v2/health/ready     200; ready: 503 until the models are loaded and from SIGTERM on
    GET  /v2/models/{name}[/versions/{version}]         model metadata (from its metadata.json)
    GET  /v2/models/{name}[/versions/{version}]/ready   200, or 503 until loaded
    POST /v2/models/{name}[/versions/{version}]/infer   inference

Strict, like the typed endpoints: exactly one input, named and typed as the model's metadata says,
its shape the model's with the batch (-1) from 1 to its task's most rows (artifacts.MODELS), and `data` that
many finite JSON numbers, row-major, flat or nested exactly as `shape` (mnist-fc*: within the
metadata's range [0, 1]). Unknown fields are refused; parameters that would change the answer
(classification, shared memory) are refused; other parameters are ignored.

What OIP clients send beside the tensors, each handled on purpose (tests/http/test_kserve.py,
tests/http/test_tritonclient.py, tests/http/test_v2.py):

* ``model_name``, ``model_version`` (KServe's SDK puts ``model_name`` in every body): must be the path's, else
  400 naming both; a ``model_version`` where the path names none must be the version served, else 404 (as in a
  path). Not in /docs.json (service/v2/schemas.py says why).
* ``id`` (tritonclient, KServe's SDK: a UUID each time, MLServer): echoed.
* request ``parameters``: ``binary_data_output`` (tritonclient, when no output is listed) is honoured;
  tritonclient's ``sequence_id``, ``sequence_start``, ``sequence_end``, ``priority`` and ``timeout`` and
  MLServer's ``content_type`` (a codec hint for its own runtimes: datatype and shape say what a tensor is here)
  are ignored, as is any other scalar. Values must be scalars as the protocol says: MLServer's ``headers``
  (an object, which its server adds itself) is refused.
* input ``parameters``: ``binary_data_size`` (binary extension) is honoured, the shared-memory ones refused,
  MLServer's ``content_type`` and the rest ignored.
* ``outputs`` with ``parameters``: ``binary_data`` is honoured, ``classification`` and shared memory refused.
* JSON ``null`` for an optional field is refused (the protocol has no null there; MLServer's models leave unset
  fields out).

Every refusal is a 4xx
``{"error": "<sentence>"}``: 400 bad input, 404 unknown model or version, 415 content encoding, 503 not
loaded yet (415 content type, 413, 408, 429 and 504 come from the guard, service/api/guard.py, which
every POST passes).

The binary tensor data extension (tritonclient's default) is supported: with the header
``Inference-Header-Content-Length: n`` the body is n bytes of JSON then the raw little-endian tensor
bytes of each input that has ``"parameters": {"binary_data_size": size}``, in input order; sizes must
match shape x datatype exactly and no byte may be left over. Outputs are answered as binary data when
the request's ``binary_data_output`` or the output's ``binary_data`` parameter is true, the same way
(``Content-Type: application/octet-stream`` and the same header). The POST takes ``application/json``,
``application/octet-stream`` or no Content-Type (tritonclient sends none); the header decides.
"""

from __future__ import annotations

import functools
import importlib.metadata
from typing import Any, Awaitable, Callable

import bentoml
import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.api.errors import error_response
from service.v2 import schemas as s
from service.v2.tensors import (
    BINARY_TYPE, HEADER, JSON_TYPE, V2Error, encode, fail, input_array, parse, requested_outputs, short,
)

NAME = "thermo-digits"
try:
    VERSION = importlib.metadata.version(NAME)
except importlib.metadata.PackageNotFoundError:  # a Bento carries the code, not the installed package
    VERSION = "unknown"
EXTENSIONS = ["binary_tensor_data"]
PLATFORMS = {"onnx": "onnxruntime_onnx", "torchscript": "pytorch_torchscript"}


def handler(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Answer a V2Error in the error shape, {"error": "..."}."""
    @functools.wraps(endpoint)
    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except V2Error as e:
            return error_response(e.status, str(e))
    return wrapped


# --------------------------------------------------------------------------------------------- lookups


def loaded_models() -> Any:
    """The worker's Models (service/inference/models.py); 503 until the service has loaded them."""
    return require_loaded(getattr(bentoml.get_current_service(), "models", None))


def require_loaded(models: Any) -> Any:
    """`models` when they are loaded (a Models), else 503 (the gRPC servicer asks it too)."""
    if not hasattr(models, "predict"):
        fail("the models are not loaded yet; retry in a moment", 503)
    return models


def find(models: Any, name: str, version: str | None) -> Any:
    """The loaded model `name` (at `version`, when given); 404 names what exists (the gRPC servicer asks it too)."""
    m = models.get(name)
    if m is None:
        fail(f"no model named {short(name)}; the models are {', '.join(sorted(models.loaded))}", 404)
    if version is not None and version != m.version:
        fail(f"model {name!r} has no version {short(version)}; it serves version {m.version!r}", 404)
    return m


def lookup(request: Request) -> tuple[Any, Any]:
    """(models, model) named by the path."""
    models = loaded_models()
    return models, find(models, request.path_params["name"], request.path_params.get("version"))


def check_addressed(body: s.V2InferRequest, models: Any, m: Any, path_version: str | None) -> None:
    """The body's model_name and model_version, when present, must name what the path does (400; KServe's SDK repeats
    the name); a model_version where the path names none must be the version the model serves (404, as in a path)."""
    if body.model_name is not None and body.model_name != m.name:
        fail(f"model_name: the body names model {short(body.model_name)} but the path names {m.name!r}; "
             "send the same name or leave model_name out")
    if body.model_version is None:
        return
    if path_version is None:
        find(models, m.name, body.model_version)
    elif body.model_version != path_version:
        fail(f"model_version: the body names version {short(body.model_version)} but the path names "
             f"{path_version!r}; send the same version or leave model_version out")


def tensor(spec: dict) -> dict:
    return {"name": spec["name"], "datatype": s.DATATYPES[spec["dtype"]], "shape": list(spec["shape"])}


def model_metadata(m: Any) -> dict:
    return {"name": m.name, "versions": [m.version], "platform": PLATFORMS.get(m.backend, m.backend),
            "inputs": [tensor(t) for t in m.metadata["inputs"]], "outputs": [tensor(t) for t in m.metadata["outputs"]]}


# --------------------------------------------------------------------------------------------- routes


async def server_metadata(request: Request) -> Response:
    return JSONResponse({"name": NAME, "version": VERSION, "extensions": EXTENSIONS})


async def live(request: Request) -> Response:
    return JSONResponse({"live": True})


@handler
async def ready(request: Request) -> Response:
    loaded_models()
    if not await bentoml.get_current_service().__is_ready__():
        fail("the server is stopping (draining after SIGTERM); send requests to another replica", 503)
    return JSONResponse({"ready": True})


@handler
async def metadata(request: Request) -> Response:
    return JSONResponse(model_metadata(lookup(request)[1]))


@handler
async def model_ready(request: Request) -> Response:
    lookup(request)
    return JSONResponse({"ready": True})


@handler
async def infer(request: Request) -> Response:
    """The Content-Type was checked by the guard (service/api/routes.py's accepts); the header decides the framing."""
    if request.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity"):
        fail("compressed request bodies (Content-Encoding) are not accepted; send the body as is", 415)
    header = request.headers.get(HEADER)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == BINARY_TYPE and header is None:
        fail(f"an {BINARY_TYPE} body needs the {HEADER} header (binary tensor data extension); "
             f"or send {JSON_TYPE}")
    models, m = lookup(request)
    body, binary = parse(await request.body(), header)
    check_addressed(body, models, m, request.path_params.get("version"))
    outputs = requested_outputs(m, body)
    x = input_array(m, body, binary)
    y = np.asarray(await models.predict(m.name, x))  # each model has one output
    results = [(spec, as_binary, y.astype(spec["dtype"], copy=False)) for spec, as_binary in outputs]
    return encode(m, body, results)


MODEL = "/v2/models/{name}"
VERSIONED = "/v2/models/{name}/versions/{version}"
ROUTES = [
    Route("/v2", server_metadata, methods=["GET"]),
    Route("/v2/health/live", live, methods=["GET"]),
    Route("/v2/health/ready", ready, methods=["GET"]),
    *(r for base in (MODEL, VERSIONED) for r in (
        Route(base, metadata, methods=["GET"]),
        Route(f"{base}/ready", model_ready, methods=["GET"]),
        Route(f"{base}/infer", infer, methods=["POST"]),
    )),
]
