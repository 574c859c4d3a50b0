"""No tracked text file names a path that exists on one machine only (a checkout, a home, a temporary directory).

The rule: an absolute path that starts with one of MACHINE_PATHS is refused unless it starts with one of
ALLOWED. Generic system paths (`/usr/bin/chromium`, `/etc/...`, `/dev/shm`, `/var/tmp/...`, `/tmp` and
files a snippet writes in it) are not machine paths and pass; so does a path after a word, a dot or a tilde,
which is relative, in the user's home or a URL (the cases below). Binary files are skipped. The machine paths
in this file are split in two string literals, so that no line of it names one.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

REST = r"[^\s'\"`()<>\[\],;]*"  # the rest of a path: up to a space, quote, bracket, comma or semicolon
# Each name has a character class, so that this file does not match its own patterns.
MACHINE_PATHS = re.compile(r"(?<![\w.~])(" + "|".join([
    r"/wor[k]\b",                  # this workplace's checkouts and shared data
    r"/roo[t]/",                    # root's home: what lies there was put there on one machine
    r"/hom[e]/[^/\s]+/",            # a user's home
    r"/User[s]/[^/\s]+/",           # a macOS user's home
    r"(?:/private)?/var/folder[s]/",  # macOS temporary directories
    r"/tmp/tm[p]\w",                # tempfile.mkdtemp() names
    r"/tmp/pytest-o[f]-",           # pytest's tmp_path
]) + ")" + REST)
ALLOWED = (
    "/hom" "e/bentoml/",  # the Bento's home inside the container image BentoML builds (docs/deploy.md)
    "/roo" "t/.cache",    # the cache directory inside a container image (deploy/base-image.sh)
)


def machine_paths(text: str) -> list[tuple[int, str]]:
    """(line number, path) of every machine path in `text`, in order."""
    return [(number, match.group(0))
            for number, line in enumerate(text.splitlines(), 1)
            for match in MACHINE_PATHS.finditer(line)
            if not match.group(0).startswith(ALLOWED)]


def tracked_files() -> list[str]:
    """The repository's tracked files, from git; fails (never skips) where git cannot say."""
    if shutil.which("git") is None:
        pytest.fail("tests/test_repo.py needs git to list the tracked files: install git (apt-get install git)")
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.fail(f"git ls-files failed in {REPO.name} (is it a git checkout?): {out.stderr.strip()}")
    return [name for name in out.stdout.split("\0") if name]


@pytest.mark.parametrize("text, found", [
    ("sys.path.insert(0, '/wor" "k/main')", ["/wor" "k/main"]),
    ("cd /wor" "k", ["/wor" "k"]),
    ('servers = {"old": ("/roo' 't/wt-old", 1)}', ["/roo" "t/wt-old"]),
    ("`/hom" "e/alice/src/thermo-digits`", ["/hom" "e/alice/src/thermo-digits"]),
    ("open /User" "s/bob/x.png", ["/User" "s/bob/x.png"]),
    ("BENTOML_HOME=/tmp/tm" "pa1b2c3/bentoml", ["/tmp/tm" "pa1b2c3/bentoml"]),
    ("see /tmp/pytest-o" "f-root/pytest-3/x", ["/tmp/pytest-o" "f-root/pytest-3/x"]),
    ("file:///wor" "k/main/x", ["/wor" "k/main/x"]),
    ("CHROMIUM=/usr/bin/chromium /etc/hosts /dev/shm /var/tmp/thermo-digits-deploy", []),
    ("--json /tmp/b.json; mktemp -d /tmp/thermo-digits-base.XXXXXX; cd /tmp", []),
    ("/hom" "e/bentoml/bento/env/docker/entrypoint.sh and /roo" "t/.cache/uv", []),
    ("harness/wor" "k/x, ~/wor" "k/y, https://example.com/hom" "e/z/w, .venv/bin/python", []),
])
def test_the_rule_finds_machine_paths_and_passes_generic_ones(text, found):
    assert [path for _, path in machine_paths(text)] == found


def test_no_tracked_text_file_names_a_machine_path():
    found = []
    for name in tracked_files():
        path = REPO / name
        if not path.is_file():  # deleted in the working tree, not yet committed
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:  # binary, as git judges it
            continue
        text = data.decode("utf-8", errors="replace")
        found += [f"{name}:{number}: {machine_path}" for number, machine_path in machine_paths(text)]
    assert not found, "paths of one machine (make them relative or generic):\n" + "\n".join(found)


def test_test_files_have_unique_names():
    """pytest imports test files by their base name (rootdir mode): two test_x.py in different folders cannot both run."""
    import collections

    names = collections.Counter(p.name for p in (REPO / "tests").rglob("test_*.py"))
    assert [n for n, count in names.items() if count > 1] == []


def test_no_test_imports_a_conftest():
    """Every folder's conftest.py is imported under the one name `conftest`: which one `from conftest import` finds
    depends on the order pytest collected them in. Shared values live in testkit/."""
    found = [f"{p.relative_to(REPO)}:{n}" for p in (REPO / "tests").rglob("*.py")
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if re.match(r"\s*(from conftest import|import conftest\b)", line)]
    assert found == []
