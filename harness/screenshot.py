"""Write the README's screenshot of the web page (default docs/web-page.png): starts the service, draws a 7, converts three readings.

Run from the repository root: `python -m harness.screenshot [--out PATH] [--url URL]`. Needs Debian's
chromium (`apt-get install chromium`; CHROMIUM=path to use another) and the `[test]` extra (Playwright).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from testkit.browser import VIEWPORT, launch, screenshot
from testkit.server import REPO, Server, serving


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "web-page.png", help="PNG to write")
    parser.add_argument("--url", help="use this running service instead of starting one")
    args = parser.parse_args(argv)
    import playwright.sync_api as playwright

    with (contextlib.nullcontext(Server.external(args.url)) if args.url else serving()) as server, \
            playwright.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(f"{server.url}/")
        screenshot(page, args.out)
        browser.close()
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
