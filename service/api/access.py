"""Which scope each HTTP path needs (service/core/auth.py decides whether a token grants it), and ``BearerAuth``, the ASGI middleware that asks for whatever the door did not decide (GETs, in-process clients)."""

from __future__ import annotations

from typing import Callable

from service.api.errors import respond
from service.core.auth import ADMIN, PREDICT, Access
from service.core.errors import ServingError

# Open without a token: the probes, Prometheus, the page and its assets, Swagger UI's page (its /docs.json is not).
OPEN_PATHS = frozenset({"/", "/docs", "/livez", "/healthz", "/readyz", "/metrics", "/v2/health/live",
                        "/v2/health/ready", "/favicon.ico", "/monitor"})
OPEN_PREFIXES = ("/web/", "/static_content/")
ADMIN_PREFIX = "/v2/repository"
AUTHORIZED = "thermodigits.authorized"  # scope key: the door has checked this request's token


def scope_of(path: str) -> str | None:
    """The scope a request to `path` needs: None (open), PREDICT or ADMIN (the model repository)."""
    if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
        return None
    return ADMIN if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/") else PREDICT


def authorization(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The Authorization header's value from ASGI/uvicorn headers (names in lower case), None when absent."""
    return next((v for k, v in headers if k == b"authorization"), None)


class BearerAuth:
    """ASGI middleware: 401 or 403 in the error shape, before the body is read, for a request whose token does not
    grant its path's scope."""

    def __init__(self, app: Callable, access: Access):
        self.app = app
        self.access = access

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and not scope.get(AUTHORIZED):
            needed = scope_of(scope["path"])
            if self.access.needed(needed):
                try:
                    self.access.check(authorization(scope["headers"]), needed)
                except ServingError as e:
                    return await respond(send, e)
        await self.app(scope, receive, send)
