"""Write the README's screenshots: the web page (default docs/web-page.png: a 7 drawn, three readings converted)
or, with `--page monitor`, the monitor page (docs/monitor.png: mnist-fc with a canary and a shadow, after known
requests).

Run from the repository root: `python -m harness.screenshot [--page main|monitor] [--out PATH] [--url URL]`. Needs
Debian's chromium (`apt-get install chromium`; CHROMIUM=path to use another) and the `[test]` extra (Playwright).
The monitor's picture needs a second version of mnist-fc: the service is started from a copy of the repository
(`canary_serving_file`) whose serving file makes mnist-fc's other committed version its canary and shadow. With --url,
nothing is started or sent: the picture shows that service as it is.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

import numpy as np

from testkit.browser import VIEWPORT, launch, screenshot
from testkit.server import REPO, Server, serving
from testkit.wait import wait_until

OUT = {"main": REPO / "docs" / "web-page.png", "monitor": REPO / "docs" / "monitor.png"}
CANARY_WEIGHT = 0.5  # of mnist-fc's requests that name no version, in canary_serving_file
MONITOR_READY = "#monitor[data-roles=metadata]"  # drawn from /metrics, with the roles and references of /metadata


def canary_serving_file(path: Path) -> Path:
    """A serving file at `path`: models/serving.json's, with mnist-fc's other committed version as its canary (weight
    CANARY_WEIGHT) and its shadow (share 1). Serve the repository with SERVICE_SERVING_FILE=`path`."""
    import artifacts
    from artifacts import serving as serving_file

    served = serving_file.read()
    entry = served.models[artifacts.MNIST]
    second = next(v for v in artifacts.folder_versions(artifacts.MNIST) if v != entry.default)
    canary = serving_file.ModelServing(entry.default, serving_file.Canary(second, CANARY_WEIGHT),
                                       serving_file.Shadow(second, 1.0))
    serving_file.write(served.with_model(artifacts.MNIST, canary), Path(path))
    return Path(path)


def routing_key(model: str, canary: bool, weight: float = CANARY_WEIGHT) -> str:
    """An X-Routing-Key whose requests to `model` (naming no version) go to its canary, or to its default."""
    from service.core.routing import key_point

    return next(key for key in (f"client-{i}" for i in range(1000)) if (key_point(model, key) < weight) == canary)


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of /metrics' samples `name` with `labels` (0 when none)."""
    import httpx

    total = 0.0
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def monitor_traffic(url: str) -> None:
    """The picture's requests: MNIST digits to mnist-fc's default (shadowed) and canary, a few inverted digits (outside
    the reference), 500 ones to mnist-fc-distilled (its drift above the threshold), readings to both thermometers."""
    import httpx

    from testkit.payloads import mnist_test

    images, labels = mnist_test(synthetic=False)
    ones = images[labels == 1][:500]

    def post(path: str, body: dict, key: str | None = None) -> None:
        response = httpx.post(f"{url}{path}", json=body, headers={"x-routing-key": key} if key else {}, timeout=60)
        response.raise_for_status()

    default, canary = routing_key("mnist-fc", False), routing_key("mnist-fc", True)
    for i in range(6):
        post("/digits", {"images": images[100 * i:100 * i + 100].tolist()}, default)
    for i in range(2):
        post("/digits", {"images": images[600 + 100 * i:700 + 100 * i].tolist()}, canary)
    post("/digits", {"images": (255 - images[800:810]).tolist()}, default)
    post("/digits", {"images": ones.tolist(), "model": "distilled"})
    readings = np.random.default_rng(0).uniform(20, 95, 600).round(1).tolist()
    post("/temperature", {"readings": readings, "model": "linear"})
    post("/temperature", {"readings": readings[:40], "model": "mlp"})
    # The shadow's copies run after the answers, and drift scores are set every second: wait for both.
    wait_until(lambda: metric(url, "model_shadow_rows_total") == 610, message="the shadow's copies of 610 rows")
    wait_until(lambda: all(np.isfinite(metric(url, "model_prediction_drift", model=m))
                           for m in ("mnist-fc", "mnist-fc-distilled", "temperature-linear")),
               message="the drift scores")


def monitor_screenshot(page, path) -> None:
    """The monitor page, its figures drawn, written to `path` as a full-page PNG."""
    page.wait_for_selector(MONITOR_READY)
    page.screenshot(path=str(path), full_page=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--page", choices=sorted(OUT), default="main", help="which page")
    parser.add_argument("--out", type=Path, help="PNG to write (default: docs/web-page.png or docs/monitor.png)")
    parser.add_argument("--url", help="use this running service instead of starting one")
    args = parser.parse_args(argv)
    out = args.out or OUT[args.page]
    import playwright.sync_api as playwright

    with contextlib.ExitStack() as stack:
        if args.url:
            server = Server.external(args.url)
        elif args.page == "main":
            server = stack.enter_context(serving())
        else:  # one worker: every drift score is that worker's, none hidden by another's unscored window
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="monitor-")))
            env = {"SERVICE_SERVING_FILE": str(canary_serving_file(folder / "serving.json"))}
            server = stack.enter_context(serving(env=env, workers=1))
            monitor_traffic(server.url)
        p = stack.enter_context(playwright.sync_playwright())
        browser = launch(p)
        page = browser.new_page(viewport=VIEWPORT)
        if args.page == "main":
            page.goto(f"{server.url}/")
            screenshot(page, out)
        else:
            page.goto(f"{server.url}/monitor")
            monitor_screenshot(page, out)
        browser.close()
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
