"""BentoML's packaged Swagger UI page (``_bentoml_impl/server/main-openapi.html``) without Google Tag Manager, for GET /docs.

BentoML's own page loads Google Tag Manager from the internet: on an air-gapped deployment that request
fails, anywhere else it sends every visitor to a third party. Its initializer also leaves Swagger UI's
validator badge on, which sends the spec's URL to validator.swagger.io. There is no setting for either.
"""

from __future__ import annotations

import re
from pathlib import Path

import _bentoml_impl.server


def strip_tag_manager(html: str) -> str:
    """The page without its Google Tag Manager <script> and <noscript> blocks (and their comments)."""
    html = re.sub(r"[ \t]*<!-- (End )?Google Tag Manager( \(noscript\))? -->\n?", "", html)
    for tag in ("script", "noscript"):
        html = re.sub(rf"[ \t]*<{tag}\b[^>]*>(?:(?!</{tag}>).)*googletagmanager(?:(?!</{tag}>).)*</{tag}>\n?", "",
                      html, flags=re.S | re.I)
    return html


def page(initializer: str) -> str:
    """BentoML's Swagger UI page, made safe to serve at /docs, its initializer script replaced by `initializer` (a URL).

    Its assets are relative (./static_content/..., ./docs.json), which from /docs resolve to the
    root, where BentoML serves them. Raises RuntimeError when the page no longer looks as expected.
    """
    html = strip_tag_manager((Path(_bentoml_impl.server.__file__).parent / "main-openapi.html").read_text())
    html = html.replace("./static_content/swagger-initializer.js", initializer)
    html = html.replace("./static_content/", "/static_content/")  # also right if served at /docs/
    if re.search(r"googletagmanager|swagger-initializer|<script[^>]+src=\"https?:", html, re.I):
        # Only a BentoML upgrade can get here (it is pinned): fail at start rather than leak visitors.
        raise RuntimeError("BentoML's main-openapi.html changed: update service/upstream/swagger.py")
    return html
