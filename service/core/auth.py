"""Bearer tokens with two scopes: predictions and model changes. ``Access.check(authorization, scope)`` is the one decision, asked by every transport.

* ``PREDICT``: when tokens are configured (``SERVICE_API_TOKENS`` or ``SERVICE_API_TOKENS_FILE``), every route but
  the probes, /metrics and the web page needs ``Authorization: Bearer <token>`` (401 otherwise); without them,
  predictions are open.
* ``ADMIN``: the model repository (index, load, unload) needs a token of ``SERVICE_ADMIN_TOKENS`` or
  ``SERVICE_ADMIN_TOKENS_FILE``, which a prediction token does not grant (403); an admin token grants predictions too.
  With no admin token configured, model changes are off and answer 403 (as TorchServe keeps its model API off).

Tokens come from the variable (separated by commas or white space) or the file (one per line; blank lines and lines
starting with ``#`` are skipped, each line stripped), never both; several may be valid at once, so that a token is
rotated by adding the new one, moving clients, then removing the old. A token is at least ``MIN_LENGTH`` characters
of RFC 6750's token alphabet. A token source that cannot be read, holds no token or holds a malformed one stops the
service at start with a message naming the variable. Tokens are compared as SHA-256 digests with
``hmac.compare_digest``, each against every configured token, so the time taken does not depend on how much of a
token is right. No message ever repeats a token. The decision, and what is open and why: docs/decisions/auth.md.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path
from typing import Any

from service.core.errors import Kind, ServingError

MIN_LENGTH = 16
TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token
REALM = 'Bearer realm="thermo-digits"'
PREDICT, ADMIN = "predict", "admin"  # the scopes


def refused(message: str, challenge: str = REALM, kind: Kind = Kind.UNAUTHENTICATED) -> ServingError:
    return ServingError(message, kind, (("www-authenticate", challenge),))


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
    def read(cls, inline: str, file: str, variable: str) -> "Tokens | None":
        """The tokens `variable` (inline) or `variable`_FILE (a file) configure, or None when neither is set."""
        if inline and file:
            raise ValueError(f"{variable} and {variable}_FILE are both set; set one")
        if inline:
            return cls.parse(inline, variable, lines=False)
        if file:
            try:
                text = Path(file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
                raise ValueError(f"{variable}_FILE={file}: cannot be read ({reason})") from None
            return cls.parse(text, f"{variable}_FILE={file}", lines=True)
        return None

    @classmethod
    def from_settings(cls, settings: Any) -> "Tokens | None":
        """The prediction tokens SERVICE_API_TOKENS or SERVICE_API_TOKENS_FILE configure, or None when neither is set."""
        return cls.read(settings.api_tokens, settings.api_tokens_file, "SERVICE_API_TOKENS")

    def valid(self, token: str | bytes) -> bool:
        given, matched = _digest(token), False
        for digest in self._digests:  # every one, whatever matches: constant time in which one does
            matched |= hmac.compare_digest(given, digest)
        return matched


def bearer(authorization: bytes | None) -> bytes:
    """The token of an Authorization header value; ServingError (401) when it carries none."""
    if authorization is None:
        raise refused("this route needs a bearer token: send the header Authorization: Bearer <token>")
    scheme, _, token = authorization.strip(b" \t").partition(b" ")
    if scheme.lower() != b"bearer":
        shown = scheme[:20].decode("latin-1", "replace")
        raise refused(f"Authorization must use the Bearer scheme, not {shown!r}")
    token = token.strip(b" \t")
    if not token:
        raise refused("the bearer token is empty", f'{REALM}, error="invalid_request"')
    return token


class Access:
    """Which tokens each scope takes: `predict` (None: predictions are open) and `admin` (None: changes are off)."""

    def __init__(self, predict: Tokens | None, admin: Tokens | None = None):
        self.predict = predict
        self.admin = admin

    @classmethod
    def from_settings(cls, settings: Any) -> "Access":
        """SERVICE_API_TOKENS[_FILE] and SERVICE_ADMIN_TOKENS[_FILE]; ValueError naming the variable at fault."""
        predict = Tokens.from_settings(settings)
        admin = Tokens.read(settings.admin_tokens, settings.admin_tokens_file, "SERVICE_ADMIN_TOKENS")
        return cls(predict, admin)

    def needed(self, scope: str | None) -> bool:
        """Whether a request of `scope` (None: open) must show a token."""
        return scope == ADMIN or (scope == PREDICT and self.predict is not None)

    def check(self, authorization: bytes | None, scope: str | None) -> None:
        """Nothing when the Authorization header value (None: absent) grants `scope`, else ServingError: 401 (no or
        a wrong token) or 403 (changes are off, or a prediction token asks for one), with WWW-Authenticate."""
        if scope is None or (scope == PREDICT and self.predict is None):
            return
        if scope == ADMIN and self.admin is None:
            raise refused("model changes are off on this server: it starts them only with SERVICE_ADMIN_TOKENS "
                          "(or SERVICE_ADMIN_TOKENS_FILE) set", f'{REALM}, error="insufficient_scope"', Kind.FORBIDDEN)
        token = bearer(authorization)
        if self.admin is not None and self.admin.valid(token):
            return
        if scope == PREDICT and self.predict.valid(token):
            return
        if scope == ADMIN and self.predict is not None and self.predict.valid(token):
            raise refused("this token may send predictions but not change models: use a token of "
                          "SERVICE_ADMIN_TOKENS", f'{REALM}, error="insufficient_scope"', Kind.FORBIDDEN)
        raise refused("the bearer token is not valid", f'{REALM}, error="invalid_token"')
