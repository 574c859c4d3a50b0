"""The service's own web page: GET / (service/web/index.html), its assets under /web/, and GET /docs.

BentoML's index page at ``/`` is its Swagger UI (``main-openapi.html``), which loads Google Tag
Manager from the internet: on an air-gapped deployment that request fails, anywhere else it sends
every visitor to a third party. Here ``/`` is our page (mounted routes match before BentoML's own)
and ``/docs`` is BentoML's Swagger UI without Tag Manager. Nothing served here makes a request to
another origin, and the Content-Security-Policy header tells the browser to refuse any that would.
The browser test (tests/test_browser.py) records every request to check it.
"""

from __future__ import annotations

import re
from pathlib import Path

import _bentoml_impl.server
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

WEB = Path(__file__).with_name("web")
# no-cache = revalidate every time (a cheap 304 thanks to the ETag): a redeploy is seen at once,
# never an old app.js with a new index.html.
CACHE = "no-cache"
# Same origin only. The page draws its previews into canvases (no data: or blob: images needed).
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# Swagger UI (React) sets inline styles and uses data: images in its CSS.
DOCS_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def _strip_tag_manager(html: str) -> str:
    """BentoML's Swagger page without its Google Tag Manager <script> and <noscript> blocks (and their comments)."""
    html = re.sub(r"[ \t]*<!-- (End )?Google Tag Manager( \(noscript\))? -->\n?", "", html)
    for tag in ("script", "noscript"):
        html = re.sub(rf"[ \t]*<{tag}\b[^>]*>(?:(?!</{tag}>).)*googletagmanager(?:(?!</{tag}>).)*</{tag}>\n?", "",
                      html, flags=re.S | re.I)
    return html


def _swagger_page() -> str:
    """BentoML's own Swagger UI page, made safe to serve at /docs.

    Its assets are relative (./static_content/..., ./docs.json), which from /docs resolve to the
    root, where BentoML serves them. Its initializer leaves Swagger UI's validator badge on, which
    sends the spec's URL to validator.swagger.io on any host but localhost: ours turns it off.
    """
    html = _strip_tag_manager((Path(_bentoml_impl.server.__file__).parent / "main-openapi.html").read_text())
    html = html.replace("./static_content/swagger-initializer.js", "/web/swagger-init.js")
    html = html.replace("./static_content/", "/static_content/")  # also right if served at /docs/
    if re.search(r"googletagmanager|swagger-initializer|<script[^>]+src=\"https?:", html, re.I):
        # Only a BentoML upgrade can get here (it is pinned): fail at start rather than leak visitors.
        raise RuntimeError("BentoML's main-openapi.html changed: update service/webpage.py's clean-up")
    return html


SWAGGER_PAGE = _swagger_page()


class Assets(StaticFiles):
    """StaticFiles with our cache and security headers."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                message.setdefault("headers", []).extend(
                    [(b"cache-control", CACHE.encode()), (b"x-content-type-options", b"nosniff")])
            await send(message)

        await super().__call__(scope, receive, with_headers)


def _headers(csp: str) -> dict[str, str]:
    return {"cache-control": CACHE, "content-security-policy": csp, "x-content-type-options": "nosniff"}


async def index(request: Request) -> Response:
    """GET /: the drawing and thermometer page."""
    try:
        page = (WEB / "index.html").read_bytes()
    except FileNotFoundError:  # a build that left service/web/ out must still serve the API
        return JSONResponse({"error": "the web page is not part of this build (service/web/ is missing)"}, 404)
    return HTMLResponse(page, headers=_headers(PAGE_CSP))


async def docs(request: Request) -> Response:
    """GET /docs: Swagger UI for /docs.json, without Google Tag Manager."""
    return HTMLResponse(SWAGGER_PAGE, headers=_headers(DOCS_CSP))


ROUTES = [
    Route("/", index, methods=["GET", "HEAD"]),
    Route("/docs", docs, methods=["GET", "HEAD"]),
    Mount("/web", app=Assets(directory=WEB, check_dir=False), name="web"),
]
