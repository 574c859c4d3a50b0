"""Write the generated parts of the docs from the code: the settings table of docs/configuration.md (service/settings.py).

    python -m harness.docs            # rewrite them in place
    python -m harness.docs --check    # exit 1 naming each part that is out of date (what tests/unit/test_docs.py asks)

A generated part sits between `<!-- generated: NAME -->` and `<!-- end generated -->` lines.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]


def settings_table() -> str:
    from service.settings import Settings

    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for env, default, meaning in Settings.documented():
        rows.append(f"| `{env}` | {f'`{default}`' if default else '(unset)'} | {meaning} |")
    return "\n".join(rows)


PARTS: dict[str, tuple[Path, Callable[[], str]]] = {
    "settings": (REPO / "docs" / "configuration.md", settings_table),
}


def render(text: str, name: str, content: str) -> str:
    pattern = re.compile(rf"(<!-- generated: {name} -->\n).*?(<!-- end generated -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"no <!-- generated: {name} --> block")
    return pattern.sub(lambda m: m.group(1) + content + "\n" + m.group(2), text)


def stale() -> list[str]:
    """The parts whose file does not hold what the code generates now."""
    return [f"{path.relative_to(REPO)} ({name})" for name, (path, make) in PARTS.items()
            if render(path.read_text(), name, make()) != path.read_text()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    if args.check:
        out = stale()
        for part in out:
            print(f"out of date: {part}; run python -m harness.docs")
        return 1 if out else 0
    for name, (path, make) in PARTS.items():
        path.write_text(render(path.read_text(), name, make()))
        print(f"wrote {path.relative_to(REPO)} ({name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
