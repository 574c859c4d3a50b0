"""Where a worker's time goes: py-spy samples one `bentoml serve` worker while wrk loads one endpoint, then groups the stacks.

    .venv/bin/python -m harness.profile --endpoint temperature --seconds 10

Prints markdown tables: the share of the worker's busy samples charged to each part of the request
path (idle waiting in epoll is not sampled), and the top leaf functions.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import wrk
from testkit import payloads
from testkit.server import parse_env, start_service

# (label, regex on one frame "function (/full/path.py:line)"). Each sample is charged to the innermost
# frame that matches any row (rows tried in order for that frame), so the shares are exclusive and add
# up to 100 %: a middleware is charged only for its own code, not for the app it wraps.
PARTS = [
    ("ONNX Runtime inference", r"/onnxruntime/"),
    ("image decode + preprocess (service/inference/images.py, Pillow)", r"(service/inference/images\.py|/PIL/)"),
    ("response JSON schema regenerated per response (IOMixin.mime_type)", r"^(mime_type|model_json_schema) |pydantic/json_schema\.py"),
    ("pydantic validation and serialisation", r"/pydantic(_core)?/"),
    ("access log (logging)", r"(/logging/|http/access\.py)"),
    ("Prometheus metrics middleware", r"(/prometheus_client/|http/instruments\.py)"),
    ("OpenTelemetry ASGI middleware", r"/opentelemetry/"),
    ("thread hop of sync endpoints (anyio, threading, queue)", r"(/anyio/|/threading\.py|/queue\.py)"),
    ("multipart form parsing", r"(/multipart/|/python_multipart/|starlette/formparsers\.py)"),
    ("HTTP protocol (uvicorn, h11, httptools)", r"(/uvicorn/|/h11/|/httptools/)"),
    ("asyncio event loop and sockets", r"(/asyncio/|/selectors\.py)"),
    ("Open Inference Protocol tensors (our code)", r"service/v2/"),
    ("service endpoints and schemas (our code)", r"service/(service\.py|api/schemas\.py|api/shapes\.py|inference/)"),
    ("service guard, errors, auth and patches (our code)", r"service/(api|upstream)/"),
    ("BentoML request plumbing", r"(/_bentoml_impl/|/_bentoml_sdk/|/bentoml/)"),
    ("Starlette routing and responses", r"/starlette/"),
    ("numpy", r"/numpy/"),
    ("json (stdlib)", r"/json/"),
]


def parse_raw(path: Path) -> tuple[collections.Counter, int]:
    """py-spy's raw (collapsed) output: 'frame;frame;... count' per line, root first."""
    stacks: collections.Counter = collections.Counter()
    for line in path.read_text(errors="replace").splitlines():  # py-spy can read a torn frame name ...
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():  # ... or a frame name with a newline in it: skip the pieces
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks, sum(stacks.values())


def charge(stack: tuple[str, ...]) -> str:
    for frame in reversed(stack):
        for label, rx in _COMPILED:
            if rx.search(frame):
                return label
    return "other"


_COMPILED = [(label, re.compile(pattern)) for label, pattern in PARTS]


def summarise(stacks: collections.Counter, total: int, top: int = 12) -> str:
    parts: collections.Counter = collections.Counter()
    leaves: collections.Counter = collections.Counter()
    for s, c in stacks.items():
        parts[charge(s)] += c
        leaves[s[-1]] += c
    rows = ["| part of the request path (innermost frame) | share of worker CPU samples |", "| --- | ---: |"]
    rows += [f"| {label} | {100 * c / max(total, 1):.1f} % |" for label, c in parts.most_common()]
    rows += ["", "| top leaf functions (self time) | share |", "| --- | ---: |"]
    for frame, c in leaves.most_common(top):
        name = re.sub(r"\(.*/(site-packages|lib/python3\.\d+|main)/", "(", frame).replace("|", "/")
        rows.append(f"| `{name}` | {100 * c / max(total, 1):.1f} % |")
    return "\n".join(rows)


def profile(endpoint: str, seconds: float, concurrency: int, rate: int = 250, bentoml_config: str = "",
            env: dict[str, str] | None = None) -> str:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    logdir = Path(tempfile.mkdtemp(prefix="harness-profile-"))
    ps = {**payloads.bench_payloads(), **payloads.v2_payloads()}
    p, body = ps[endpoint], payloads.write_bodies(logdir / "bodies", ps)[endpoint]
    server = start_service(bentoml_config=bentoml_config, env=env, logdir=logdir)
    try:
        server.wait_ready()
        wrk.run(server.url, p, body, concurrency, 2)  # warm-up
        worker = server.workers()[0].pid
        raw = logdir / "pyspy.txt"
        # --nonblocking: sample without pausing the worker, so the profile does not slow what it measures.
        spy = subprocess.Popen([pyspy, "record", "-p", str(worker), "-d", str(int(seconds) + 1), "-r", str(rate),
                                "--nonblocking", "--full-filenames", "-f", "raw", "-o", str(raw)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result = wrk.run(server.url, p, body, concurrency, seconds)
        spy.wait()
    finally:
        server.stop()
    stacks, total = parse_raw(raw)
    head = (f"py-spy, {rate} Hz, one worker, `{endpoint}` at concurrency {concurrency} for {seconds:g} s "
            f"({result.rps:.0f} 2xx/s while sampled, {result.non_2xx} non-2xx), {total} samples\n\n")
    return head + summarise(stacks, total)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", default="temperature", choices=[*payloads.bench_payloads(), *payloads.v2_payloads()])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--bentoml-config", default="", help="extra BENTOML_CONFIG_OPTIONS for the service (default: none)")
    ap.add_argument("--env", action="append", metavar="KEY=VALUE", help="extra environment for the service")
    args = ap.parse_args()
    print(profile(args.endpoint, args.seconds, args.concurrency, bentoml_config=args.bentoml_config,
                  env=parse_env(args.env)))


if __name__ == "__main__":
    main()
