"""Optional bearer tokens: when any are configured, every route but the probes, /metrics and the web page needs `Authorization: Bearer <token>`, else 401.

Tokens come from ``SERVICE_API_TOKENS`` (separated by commas or white space) or ``SERVICE_API_TOKENS_FILE``
(one per line; blank lines and lines starting with ``#`` are skipped, each line stripped), never both; several
may be valid at once, so that a token is rotated by adding the new one, moving clients, then removing the old.
A token is at least ``MIN_LENGTH`` characters of RFC 6750's token alphabet. A token source that cannot be read,
holds no token or holds a malformed one stops the service at start with a message naming the variable.

``Tokens.refusal(authorization)`` is the one decision: the door (service/upstream/door.py) asks it as soon as
a request's headers are parsed, before the body is read and before admission; ``BearerAuth`` asks it for
whatever reaches the ASGI app undecided (GETs, in-process clients). Tokens are compared as SHA-256 digests with
``hmac.compare_digest``, each against every configured token, so the time taken does not depend on how much of
a token is right. No message ever repeats a token. The decision, and what is open and why: docs/decisions/auth.md.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from service.api.errors import respond

MIN_LENGTH = 16
TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token
REALM = 'Bearer realm="thermo-digits"'
# Open without a token: the probes, Prometheus, the page and its assets, Swagger UI's page (its /docs.json is not).
OPEN_PATHS = frozenset({"/", "/docs", "/livez", "/healthz", "/readyz", "/metrics", "/v2/health/live",
                        "/v2/health/ready", "/favicon.ico"})
OPEN_PREFIXES = ("/web/", "/static_content/")
AUTHORIZED = "thermodigits.authorized"  # scope key: the door has checked this request's token


def protects(path: str) -> bool:
    """Whether `path` needs a token (when tokens are configured)."""
    return path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES)


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused (one sentence for the error shape) and its WWW-Authenticate header value."""

    message: str
    challenge: str


def _digest(token: str | bytes) -> bytes:
    return hashlib.sha256(token.encode("latin-1") if isinstance(token, str) else token).digest()


class Tokens:
    """The configured tokens (kept as digests only)."""

    def __init__(self, tokens: list[str]):
        self._digests = tuple(_digest(t) for t in tokens)

    def __len__(self) -> int:
        return len(self._digests)

    @classmethod
    def parse(cls, text: str, variable: str, lines: bool) -> "Tokens":
        """Tokens from `text` (one per line when `lines`, else separated by commas or white space); ValueError naming
        `variable` when there is none or one is malformed (its position, never its value)."""
        if lines:
            entries = [line.strip() for line in text.splitlines()]
            entries = [e for e in entries if e and not e.startswith("#")]
        else:
            entries = [e for e in re.split(r"[,\s]+", text) if e]
        if not entries:
            raise ValueError(f"{variable}: holds no token")
        for i, token in enumerate(entries, start=1):
            if not TOKEN.fullmatch(token):
                raise ValueError(f"{variable}: token {i} has characters a bearer token cannot carry "
                                 "(letters, digits and - . _ ~ + / then = only)")
            if len(token) < MIN_LENGTH:
                raise ValueError(f"{variable}: token {i} is {len(token)} characters; use at least {MIN_LENGTH} "
                                 "(for example: python -c 'import secrets; print(secrets.token_urlsafe(32))')")
        return cls(entries)

    @classmethod
    def from_settings(cls, settings: Any) -> "Tokens | None":
        """The tokens SERVICE_API_TOKENS or SERVICE_API_TOKENS_FILE configure, or None when neither is set."""
        inline, file = settings.api_tokens, settings.api_tokens_file
        if inline and file:
            raise ValueError("SERVICE_API_TOKENS and SERVICE_API_TOKENS_FILE are both set; set one")
        if inline:
            return cls.parse(inline, "SERVICE_API_TOKENS", lines=False)
        if file:
            try:
                text = Path(file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
                raise ValueError(f"SERVICE_API_TOKENS_FILE={file}: cannot be read ({reason})") from None
            return cls.parse(text, f"SERVICE_API_TOKENS_FILE={file}", lines=True)
        return None

    def valid(self, token: str | bytes) -> bool:
        given, matched = _digest(token), False
        for digest in self._digests:  # every one, whatever matches: constant time in which one does
            matched |= hmac.compare_digest(given, digest)
        return matched

    def refusal(self, authorization: bytes | None) -> Refusal | None:
        """None when the Authorization header value carries a valid bearer token, else why not."""
        if authorization is None:
            return Refusal("this route needs a bearer token: send the header Authorization: Bearer <token>", REALM)
        scheme, _, token = authorization.strip(b" \t").partition(b" ")
        if scheme.lower() != b"bearer":
            shown = scheme[:20].decode("latin-1", "replace")
            return Refusal(f"Authorization must use the Bearer scheme, not {shown!r}", REALM)
        token = token.strip(b" \t")
        if not token:
            return Refusal("the bearer token is empty", f'{REALM}, error="invalid_request"')
        if not self.valid(token):
            return Refusal("the bearer token is not valid", f'{REALM}, error="invalid_token"')
        return None


def authorization(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The Authorization header's value from ASGI/uvicorn headers (names in lower case), None when absent."""
    return next((v for k, v in headers if k == b"authorization"), None)


class BearerAuth:
    """ASGI middleware: 401 in the error shape, before the body is read, for a protected route without a valid token."""

    def __init__(self, app: Callable, tokens: Tokens | None):
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if (self.tokens is not None and scope["type"] == "http" and not scope.get(AUTHORIZED)
                and protects(scope["path"])):
            refusal = self.tokens.refusal(authorization(scope["headers"]))
            if refusal is not None:
                return await respond(send, 401, refusal.message,
                                     ((b"www-authenticate", refusal.challenge.encode()),))
        await self.app(scope, receive, send)
