"""Every example of the README and docs/api.md, run against a real `bentoml serve`, answers what the page says it answers.

An example is a ```console block of `$ command` lines, each followed by its expected output, or a ```python block
followed by a ```console block holding its expected output. `...` in an expected output stands for any text.
An HTML comment `<!-- example: env KEY=VALUE ... -->` right before a block runs it against a server started with
that environment. Examples run from the repository's root, with localhost:3000 pointed at the test's server and
localhost:8001 at its gRPC port; a Python example that imports tritonclient.grpc runs in the OIP clients' venv
(testkit/clients.py: it needs protobuf<7).
"""

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "docs/api.md")
BLOCK = re.compile(r"(?:<!-- example: env (?P<env>[^>]*?) -->\n)?```(?P<lang>\w+)\n(?P<body>.*?)```", re.S)


@dataclass
class Example:
    where: str
    kind: str  # "shell" or "python"
    code: str
    expected: str
    env: dict[str, str] = field(default_factory=dict)


def examples() -> list[Example]:
    found = []
    for doc in DOCS:
        text = (REPO / doc).read_text()
        blocks = list(BLOCK.finditer(text))
        for i, block in enumerate(blocks):
            line = text[:block.start()].count("\n") + 1
            env = dict(pair.split("=", 1) for pair in (block["env"] or "").split())
            if block["lang"] == "console" and block["body"].startswith("$ "):
                for command in re.split(r"^\$ ", block["body"], flags=re.M)[1:]:
                    code, _, expected = command.partition("\n")
                    found.append(Example(f"{doc}:{line}", "shell", code, expected, env))
            elif block["lang"] == "python" and i + 1 < len(blocks) and blocks[i + 1]["lang"] == "console" \
                    and text[block.end():blocks[i + 1].start()].strip() == "":
                found.append(Example(f"{doc}:{line}", "python", block["body"], blocks[i + 1]["body"], env))
    return found


EXAMPLES = examples()


def matches(expected: str, got: str) -> bool:
    pattern = ".*?".join(re.escape(part) for part in expected.strip().split("..."))
    return re.fullmatch(pattern, got.strip(), re.S) is not None


@pytest.fixture(scope="module")
def servers():
    """A server per environment the examples ask for, started when first needed."""
    from testkit.server import serving

    started, stack = {}, []

    def get(env: dict[str, str]):
        key = tuple(sorted(env.items()))
        if key not in started:
            context = serving(".", REPO, tempfile.mkdtemp(prefix="bentoml-home-docs-"), env=env)
            started[key] = context.__enter__()
            stack.append(context)
        return started[key]

    yield get
    for context in reversed(stack):
        context.__exit__(None, None, None)


def test_the_docs_have_examples():
    kinds = {(e.where.split(":")[0], e.kind) for e in EXAMPLES}
    assert {("README.md", "shell"), ("README.md", "python"), ("docs/api.md", "shell"), ("docs/api.md", "python")} <= kinds


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"{e.where}:{e.kind}" for e in EXAMPLES])
def test_example(servers, example):
    server = servers(example.env)
    host = server.url.removeprefix("http://")
    code = example.code.replace("localhost:3000", host).replace("localhost:8001", server.grpc_target)
    if example.kind == "shell":
        command = ["bash", "-c", code.replace("curl ", "curl -m 30 ", 1)]
    elif "tritonclient.grpc" in code:
        from testkit import clients

        command = [str(clients.ensure()), "-c", code]
    else:
        command = [sys.executable, "-c", code]
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "NO_PROXY": "*"})
    got = out.stdout.replace(host, "localhost:3000")
    assert out.returncode == 0, f"{example.where}: {out.stderr[-2000:]}"
    assert matches(example.expected, got), f"{example.where}: expected\n{example.expected}\ngot\n{got}"
