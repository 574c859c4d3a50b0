"""The service's own web pages: GET / (service/web/index.html), GET /monitor (monitor.html), their assets under /web/, and GET /docs (Swagger UI).

Nothing served here makes a request to another origin, and the Content-Security-Policy header tells
the browser to refuse any that would (BentoML's own index page loads Google Tag Manager: /docs is a page of
this service's, service/web/docs.html, with Swagger UI's files from BentoML's /static_content/). The browser
test records every request to check it.
"""

from __future__ import annotations

from pathlib import Path

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


def page(name: str, csp: str):
    """GET of service/web/`name` with its Content-Security-Policy."""
    async def endpoint(request: Request) -> Response:
        try:
            html = (WEB / name).read_bytes()
        except FileNotFoundError:  # a build that left service/web/ out must still serve the API
            return JSONResponse({"error": "the web page is not part of this build (service/web/ is missing)"}, 404)
        return HTMLResponse(html, headers=_headers(csp))
    return endpoint


index = page("index.html", PAGE_CSP)  # the drawing and thermometer page
monitor = page("monitor.html", PAGE_CSP)  # what each model version answers, live, from /metrics and /metadata
docs = page("docs.html", DOCS_CSP)  # Swagger UI for /docs.json; its initializer turns the validator badge off


ROUTES = [
    Route("/", index, methods=["GET", "HEAD"]),
    Route("/monitor", monitor, methods=["GET", "HEAD"]),
    Route("/docs", docs, methods=["GET", "HEAD"]),
    Mount("/web", app=Assets(directory=WEB, check_dir=False), name="web"),
]
