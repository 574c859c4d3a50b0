"""service/core/auth.py and service/api/access.py: where tokens come from, which scope each grants, what a refusal says, and what the ASGI middleware answers."""

import asyncio
import json
from types import SimpleNamespace

import pytest

from service.api.access import AUTHORIZED, BearerAuth, scope_of
from service.core.auth import ADMIN, PREDICT, Access, Tokens
from service.core.errors import Kind, ServingError

A, B = "first-token-0123456789", "second-token-abcdefghij"


def settings(tokens: str = "", file: str = "", admin: str = "") -> SimpleNamespace:
    return SimpleNamespace(api_tokens=tokens, api_tokens_file=file, admin_tokens=admin, admin_tokens_file="")


def test_no_token_configured_means_none_needed():
    assert Tokens.from_settings(settings()) is None


def test_tokens_from_the_variable_and_from_a_file(tmp_path):
    assert len(Tokens.from_settings(settings(f" {A},\n{B} "))) == 2
    file = tmp_path / "tokens"
    file.write_text(f"# rotated monthly\r\n{A}  \r\n\r\n{B}\n")  # CRLF, trailing spaces, blank lines, a comment
    tokens = Tokens.from_settings(settings(file=str(file)))
    assert len(tokens) == 2 and tokens.valid(A) and tokens.valid(B)
    link = tmp_path / "link"  # Kubernetes mounts a Secret's keys as symbolic links
    link.symlink_to(file)
    assert len(Tokens.from_settings(settings(file=str(link)))) == 2


@pytest.mark.parametrize("make,message", [
    (lambda d: settings(A, str(d / "tokens")), "SERVICE_API_TOKENS and SERVICE_API_TOKENS_FILE are both set"),
    (lambda d: settings(file=str(d / "missing")), "cannot be read (No such file or directory)"),
    (lambda d: settings(file=str(d)), "cannot be read (Is a directory)"),  # unreadable, even for root
    (lambda d: settings(file=str(d / "empty")), "holds no token"),
    (lambda d: settings(file=str(d / "comments")), "holds no token"),
    (lambda d: settings(" , "), "SERVICE_API_TOKENS: holds no token"),
    (lambda d: settings("short-token"), "token 1 is 11 characters; use at least 16"),
    (lambda d: settings(f"{A},two words here and more"), "token 2 is 3 characters"),
    (lambda d: settings(f"{A},ümlaut-token-0123456789"), "token 2 has characters a bearer token cannot carry"),
])
def test_a_bad_token_source_is_refused_naming_the_variable_never_the_token(tmp_path, make, message):
    (tmp_path / "empty").write_text("")
    (tmp_path / "comments").write_text("# nothing\n\n")
    with pytest.raises(ValueError) as e:
        Tokens.from_settings(make(tmp_path))
    assert message in str(e.value) and A not in str(e.value) and "ümlaut" not in str(e.value)


@pytest.mark.parametrize("header,verdict", [
    (None, "needs a bearer token"),
    (b"Basic " + A.encode(), "must use the Bearer scheme, not 'Basic'"),
    (b"Bearer", "the bearer token is empty"),
    (b"Bearer    ", "the bearer token is empty"),
    (b"Bearer " + A[:-1].encode(), "not valid"),
    (b"Bearer " + A.encode() + b"x", "not valid"),
    (b"Bearer " + A.encode() + b" " + B.encode(), "not valid"),
    (b"Bearer " + A.encode(), None),
    (b"bearer  " + B.encode() + b" \t", None),  # the scheme is case-insensitive; spaces around are not the token
])
def test_refusals(header, verdict):
    access = Access(Tokens([A, B]))
    if verdict is None:
        access.check(header, PREDICT)
        return
    with pytest.raises(ServingError) as e:
        access.check(header, PREDICT)
    assert e.value.kind is Kind.UNAUTHENTICATED
    assert verdict in str(e.value) and A not in str(e.value)
    assert dict(e.value.headers)["www-authenticate"].startswith('Bearer realm="thermo-digits"')


C = "admin-token-0123456789abcdef"


def refusal(access: Access, token: str | None, scope: str) -> Kind | None:
    try:
        access.check(None if token is None else f"Bearer {token}".encode(), scope)
    except ServingError as e:
        return e.kind
    return None


def test_an_admin_token_grants_both_scopes_a_prediction_token_only_predictions():
    access = Access(Tokens([A]), Tokens([C]))
    assert refusal(access, A, PREDICT) is None and refusal(access, C, PREDICT) is None
    assert refusal(access, C, ADMIN) is None
    assert refusal(access, A, ADMIN) is Kind.FORBIDDEN  # insufficient scope
    assert refusal(access, B, ADMIN) is Kind.UNAUTHENTICATED and refusal(access, None, ADMIN) is Kind.UNAUTHENTICATED


def test_with_no_admin_token_configured_model_changes_are_off():
    for predict in (None, Tokens([A])):
        access = Access(predict, None)
        assert refusal(access, A, ADMIN) is Kind.FORBIDDEN and refusal(access, None, ADMIN) is Kind.FORBIDDEN
    assert refusal(Access(None, Tokens([C])), None, PREDICT) is None  # predictions stay open without their tokens
    assert Access.from_settings(settings(admin=C)).admin.valid(C)


def test_scopes_of_paths():
    for path in ("/", "/livez", "/readyz", "/healthz", "/metrics", "/v2/health/ready", "/web/app.js", "/docs"):
        assert scope_of(path) is None, path
    for path in ("/temperature", "/digit", "/metadata", "/docs.json", "/schema.json", "/v2", "/v2/models/mnist-fc",
                 "/v2/models/mnist-fc/infer", "/no-such-route", "/web", "/webx", "/v2/repositoryx"):
        assert scope_of(path) == PREDICT, path
    for path in ("/v2/repository/index", "/v2/repository/models/mnist-fc/load", "/v2/repository"):
        assert scope_of(path) == ADMIN, path


def call(middleware, path="/digit", headers=(), scope_extra=None):
    sent = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive():
        raise AssertionError("the body was read")

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": list(headers), **(scope_extra or {})}
    asyncio.run(middleware(app)(scope, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def test_the_middleware_answers_401_in_the_error_shape_without_reading_the_body():
    access = Access(Tokens([A]))
    status, headers, body = call(lambda app: BearerAuth(app, access))
    assert status == 401 and headers[b"www-authenticate"].startswith(b"Bearer")
    assert json.loads(body) == {"error": "this route needs a bearer token: send the header Authorization: Bearer <token>"}
    assert call(lambda app: BearerAuth(app, access), headers=[(b"authorization", f"Bearer {A}".encode())])[0] == 200
    assert call(lambda app: BearerAuth(app, access), path="/readyz")[0] == 200
    assert call(lambda app: BearerAuth(app, access), scope_extra={AUTHORIZED: True})[0] == 200  # the door decided
    assert call(lambda app: BearerAuth(app, Access(None)))[0] == 200  # no tokens configured
    assert call(lambda app: BearerAuth(app, Access(None)), path="/v2/repository/index")[0] == 403  # changes are off
