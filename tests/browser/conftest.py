"""What both browser modules share: the name the browser reaches the server by, and one recording chromium context per module.

The browser reaches the server as http://thermo.test:<port> (testkit.browser.HOST, mapped to 127.0.0.1). Every request, response and JavaScript
error of a module is recorded, for its last tests to judge that nothing left the origin and nothing failed.
"""

from pathlib import Path

import pytest

from testkit.browser import CHROMIUM, HOST, VIEWPORT, launch, origin_of

TIMEOUT_MS = 30_000  # a busy 2-core machine


@pytest.fixture(scope="module")
def origin(server):
    return origin_of(server)


@pytest.fixture(scope="module")
def recorded():
    """Every request, response and JavaScript error of the whole module."""
    return {"requests": [], "responses": [], "errors": []}


@pytest.fixture(scope="module")
def context(recorded):
    # A missing browser is a failure, not a skip: `.ci/run` installs Debian's chromium (CHROMIUM=path to use another).
    assert Path(CHROMIUM).exists(), f"no chromium at {CHROMIUM}: apt-get install -y chromium"
    import playwright.sync_api as playwright

    with playwright.sync_playwright() as p:
        browser = launch(p, f"--host-resolver-rules=MAP {HOST} 127.0.0.1")
        ctx = browser.new_context(viewport=VIEWPORT)
        ctx.set_default_timeout(TIMEOUT_MS)
        ctx.on("request", lambda r: recorded["requests"].append(r.url))
        ctx.on("response", lambda r: recorded["responses"].append(r))
        ctx.on("console", lambda m: "Content Security Policy" in m.text and recorded["errors"].append(m.text))
        ctx.on("weberror", lambda e: recorded["errors"].append(str(e.error)))
        yield ctx
        browser.close()
