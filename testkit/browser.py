"""Drive the service's web page in Debian's chromium with Playwright: launch it, draw digits, convert readings, take the screenshot.

Shared by tests/browser/ and harness/screenshot.py. Playwright cannot download its own
browsers here; CHROMIUM names the browser to use (default /usr/bin/chromium, `apt-get install chromium`).
Headless unless CHROMIUM_HEADFUL=1 (which needs a display: `xvfb-run -a env CHROMIUM_HEADFUL=1 ...`).
"""

from __future__ import annotations

import math
import os
from urllib.parse import urlsplit

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
HEADLESS = os.environ.get("CHROMIUM_HEADFUL") != "1"
# Quiet and offline: no background requests of chromium's own, which would leave the service's origin.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1100, "height": 900}
# The name the browser reaches a test's server by (mapped to 127.0.0.1 by launch's caller): Swagger UI behaves
# differently on localhost (it skips its third-party validator badge there).
HOST = "thermo.test"

# Mouse strokes per digit, in the 280x280 canvas's pixels: drawn large and centred, as the help asks.
STROKES = {
    1: [[(150, 45), (138, 235)]],
    7: [[(75, 60), (205, 60), (125, 235)]],
    0: [[(140 + 60 * math.sin(2 * math.pi * i / 40), 140 - 90 * math.cos(2 * math.pi * i / 40)) for i in range(41)]],
}
# The page is showing an answer, and none is on its way.
IDLE = ("() => document.querySelector('#digit-result').getAttribute('aria-busy') === 'false'"
        " && document.querySelector('#digit').textContent !== '–'")
CHART_DRAWN = "#chart path.model-line"


def origin_of(url: str) -> str:
    """The server at `url` as the browser reaches it: http://thermo.test:<its port>."""
    return f"http://{HOST}:{urlsplit(url).port}"


def launch(playwright, *extra_args: str):
    """Chromium (CHROMIUM, headless unless CHROMIUM_HEADFUL=1) through a started `sync_playwright()`, quiet and
    offline, with `extra_args` added."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=HEADLESS, args=[*CHROMIUM_ARGS, *extra_args])


def draw(page, digit: int) -> None:
    """Draw `digit` on the page's pad with the mouse (STROKES, scaled to the canvas as shown)."""
    box = page.locator("#pad").bounding_box()
    scale = box["width"] / 280

    def at(x, y):
        return box["x"] + x * scale, box["y"] + y * scale

    for stroke in STROKES[digit]:
        page.mouse.move(*at(*stroke[0]))
        page.mouse.down()
        for (x0, y0), (x1, y1) in zip(stroke, stroke[1:]):
            page.mouse.move(*at(x1, y1), steps=max(1, round(math.hypot(x1 - x0, y1 - y0) / 8)))
        page.mouse.up()


def convert(page, text: str, model: str) -> None:
    """Type `text` as the thermometer readings, choose `model` (linear, mlp or both) and press Enter."""
    page.fill("#readings", text)
    page.check(f"input[name=model][value={model}]")
    page.press("#readings", "Enter")


def screenshot(page, path) -> None:
    """The README's picture of a loaded page, written to `path` as a full-page PNG: a 7 drawn and recognised,
    three readings converted by both models and plotted, no focus ring."""
    page.wait_for_selector(CHART_DRAWN)
    draw(page, 7)
    page.wait_for_function(IDLE)
    convert(page, "35.7, 55.9, 81.9", "both")
    page.wait_for_function("() => document.querySelectorAll('#chart .user-point').length === 6")
    page.locator("#readings").blur()
    page.screenshot(path=str(path), full_page=True)
