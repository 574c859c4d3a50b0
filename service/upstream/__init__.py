"""Everything that reaches into upstream internals (BentoML, uvicorn, circus, prometheus_client, CPython), installed by one call of ``install()`` (but ``observe_counts``, which service/monitoring.py calls); the rest of service/ uses public API only.

Each patch was written for the versions of its targets that ``WRITTEN_FOR`` (below, next to ``PATCHES``: one entry per
row of this table) names: bentoml 1.4.40, uvicorn 0.54.0, httptools 0.9.0, circus 0.18.3 (the kantoku distribution),
CPython 3.11-3.14, and where a patch relies on them prometheus_client 0.26.0 and starlette 1.10.0. Its canaries in
tests/upstream run upstream's code without the patch and fail when what it relies on or works around changes;
``install()`` logs a warning naming each patch whose targets are installed in other versions (``mismatches()``) and
starts all the same; tests/upstream/test_written_for.py fails while any differs. Benefits are B/A of
``python -m harness.ab --all`` (the service without the patch over the service with it, three alternating rounds,
every round beyond the largest spread of the same run's A/A, per measure); the figures, the commands and the
records: docs/decisions/upstream-patches.md. A speed patch whose benefit cannot be told from that noise is removed;
a correctness patch stays while its behavioural test fails without it.

| patch | upstream target | why | measured benefit | test | delete when |
| --- | --- | --- | --- | --- | --- |
| ``reuseport`` | ``circus.sockets.CircusSocket.bind``/``listen`` (the API server's socket reserves the port, SO_REUSEPORT, no listen; a port something listens on stops the start); ``uvicorn.Server.startup`` (each worker listens on a socket of its own) | one shared socket gives each connection to whichever worker wins ``accept()``: whole rounds landed on one worker (BentoML #5426) | two workers: /digit/image (200x200) c=64 B/A 0.63, 0.63, 0.65 the answers, p99 1.41, 1.29, 1.41; /temperature c=16 p99 1.55, 1.79, 1.33 | tests/upstream/test_arbiter.py, tests/upstream/test_uvicorn_server.py, tests/http/test_workers.py | BentoML gives each worker its own socket (PR #5557) or uvicorn a ``reuse_port`` |
| ``drain`` | ``uvicorn.Server.handle_exit``/``on_tick``/``shutdown``; ``HttpToolsProtocol._start_asgi_task``/``shutdown`` (via ``Door``'s base); ``circus.controller.SysHandler`` | SIGTERM closed the listener and idle keep-alive connections at once, and a second SIGTERM was ignored | correctness: SIGTERM under 32 clients lost 6-24 requests without it, 0 with it (harness.drain); no throughput effect (B/A 0.94-1.10) | tests/upstream/test_uvicorn_server.py, tests/upstream/test_arbiter.py, tests/http/test_drain.py | uvicorn drains on SIGTERM (a drain period, keep-alive off, no reset of queued connections) and BentoML forwards it |
| ``door`` | ``uvicorn.config.HTTP_PROTOCOLS["auto"]``: ``HttpToolsProtocol`` subclassed (``_start_asgi_task``, ``data_received``); BentoML's metrics and access-log middlewares subclassed | refusals (429, 401) written before the ASGI stack; uvicorn's httptools protocol has no limit on a request's head (431) | flood goodput B/A 0.80, 0.76, 0.91; refusals p99 2.39, 2.46, 1.97; admitted p99 1.20, 1.44, 1.10 | tests/upstream/test_door.py | uvicorn offers a hook before the ASGI task and a head limit for httptools |
| ``asyncio-loop`` | ``uvicorn.config.LOOP_FACTORIES["auto"]`` | uvloop accepts one connection per loop turn | flood refusals max B/A 20.3, 12.2, 8.2 (62 -> 700 ms) | tests/upstream/test_door.py | libuv accepts a burst per turn (libuv PR #3696) |
| ``deadline`` | ``ServiceAppFactory.middlewares``: ``TimeoutMiddleware`` out, its ``traffic.timeout`` to the guard | its uncancelled timers kept every request alive for 30 s; its 504 was outside the error shape | /temperature c=16 p99 B/A 27.1, 6.7, 12.8 (5 -> 69 ms); /digit c=64 p99 5.5, 7.2, 6.1 | tests/upstream/test_bentoml_app.py | BentoML cancels its timer |
| ``request-id`` | ``ServiceAppFactory.middlewares``: ``OpenTelemetryMiddleware`` -> ``RequestId`` without a tracing exporter | spans made for every request and never exported | /temperature c=16 B/A 0.63, 0.59, 0.61 the answers; /digit c=64 0.71, 0.72, 0.74; flood goodput 0.79, 0.84, 0.80 | tests/upstream/test_bentoml_app.py | BentoML leaves tracing out when unconfigured |
| ``gc`` | ``gc.freeze()``, ``gc.set_threshold`` | full collections scanning every live request in a flood | /temperature c=16 p99 B/A 13.2, 13.8, 13.0 (5 -> 65 ms); /digit c=64 p99 3.1, 3.2, 3.1; flood goodput 0.87, 0.85, 0.87 | tests/upstream/test_gc_tuning.py | CPython's collector changes (3.14's is incremental) |
| ``multipart`` | ``_bentoml_impl.serde.MultipartSerde.parse_request`` | 500s for malformed multipart bodies and binary parts under a wrong name; a text part fetched as a URL | correctness (400s) | tests/upstream/test_multipart.py | BentoML refuses these itself |
| ``histogram-counts`` | ``prometheus_client`` ``Histogram._buckets``/``_sum``, written by ``observe_counts`` (service/upstream/prometheus.py; called by service/monitoring.py, not installed) | a batch's prediction statistics cost one ``observe()`` per row, each a lock and a write to the multiprocess file | not measured | tests/upstream/test_prometheus.py | prometheus_client observes a value n times in one call |

Order, as ``install`` applies them: multipart (request parsing), the supervisor's socket and signals (before
``serve_http`` builds them), the worker's server and protocol, the door and the loop (before uvicorn loads its config
in the worker), the middleware stack changes (before the worker builds its ASGI app);
``after_load`` tunes the collector once the models are loaded. The patches in ``SKIPPABLE`` can be left out with
``SERVICE_SKIP_PATCHES`` (for A/B measurement only).
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
from typing import Any, Callable, Iterable, NamedTuple

from service.core.admission import Admission
from service.core.auth import Access
from service.settings import Settings
from service.lifecycle import Drain
from service.upstream import arbiter, bentoml_app, door, gc_tuning, multipart, server

# In the order install() applies them.
SKIPPABLE = ("reuseport", "drain", "door", "asyncio-loop", "deadline", "request-id", "gc")
PATCHES = ("multipart", *SKIPPABLE, "histogram-counts")  # every row of the table above; multipart is always
# installed, histogram-counts is a function service/monitoring.py calls
_skipped: frozenset[str] = frozenset()

CPYTHON = "CPython"  # a target that is no distribution: the interpreter, written for a range of minor versions
# What each patch was written against: the distributions whose code it replaces, subclasses or relies on (its tests in
# tests/upstream run it), with their versions. circus is installed by the kantoku distribution (BentoML's fork of it).
# The door counts its refusals on BentoML's prometheus_client series itself; multipart relies on Starlette's form
# parsing (an HTTPException(400) for a malformed body); histogram-counts writes prometheus_client's Histogram internals.
WRITTEN_FOR: dict[str, dict[str, str]] = {
    "multipart": {"bentoml": "1.4.40", "starlette": "1.10.0"},
    "reuseport": {"bentoml": "1.4.40", "kantoku": "0.18.3", "uvicorn": "0.54.0", CPYTHON: "3.11-3.14"},
    "drain": {"bentoml": "1.4.40", "kantoku": "0.18.3", "uvicorn": "0.54.0", "httptools": "0.9.0",
              CPYTHON: "3.11-3.14"},
    "door": {"bentoml": "1.4.40", "uvicorn": "0.54.0", "httptools": "0.9.0", "prometheus-client": "0.26.0"},
    "asyncio-loop": {"uvicorn": "0.54.0"},
    "deadline": {"bentoml": "1.4.40"},
    "request-id": {"bentoml": "1.4.40"},
    "gc": {CPYTHON: "3.11-3.14"},
    "histogram-counts": {"prometheus-client": "0.26.0"},
}
log = logging.getLogger("bentoml.service.thermodigits")


class Mismatch(NamedTuple):
    """A patch's target installed in another version than the one it was written for (`installed` None: absent)."""

    patch: str
    target: str
    written_for: str
    installed: str | None

    def __str__(self) -> str:
        now = f"{self.target} is not installed" if self.installed is None else f"{self.installed} is installed"
        return (f"patch {self.patch!r} was written for {self.target} {self.written_for}; {now}: check tests/upstream "
                f"before trusting it")


def _python() -> tuple[str, str]:
    return platform.python_implementation(), platform.python_version()


def _within(version: str, written_for: str) -> bool:
    """Whether `version` ("3.12.4") is in `written_for` ("3.11-3.14": minor versions, both ends included)."""
    def minor(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in text.split(".")[:2])

    low, _, high = written_for.partition("-")
    return minor(low) <= minor(version) <= minor(high or low)


def mismatches(patches: Iterable[str] = PATCHES, version: Callable[[str], str] | None = None,
               python: Callable[[], tuple[str, str]] = _python) -> list[Mismatch]:
    """Every target of `patches` installed in another version than WRITTEN_FOR names (empty: as written and tested).

    `version` looks a distribution's version up (importlib.metadata.version), `python` gives the interpreter's
    implementation and version; both can be replaced (tests)."""
    lookup = version or importlib.metadata.version  # looked up now: a test may replace it
    found = []
    for patch in patches:
        for target, written_for in WRITTEN_FOR[patch].items():
            if target == CPYTHON:
                implementation, now = python()
                if implementation != CPYTHON or not _within(now, written_for):
                    found.append(Mismatch(patch, target, written_for, f"{implementation} {now}"))
                continue
            try:
                now = lookup(target)
            except importlib.metadata.PackageNotFoundError:
                found.append(Mismatch(patch, target, written_for, None))
                continue
            if now != written_for:
                found.append(Mismatch(patch, target, written_for, f"{target} {now}"))
    return found


def warn_mismatches(patches: Iterable[str] = PATCHES, version: Callable[[str], str] | None = None,
                    python: Callable[[], tuple[str, str]] = _python) -> list[Mismatch]:
    """Log a warning for each of mismatches(); return them."""
    found = mismatches(patches, version, python)
    for mismatch in found:
        log.warning("%s", mismatch)
    return found


def install(service: Any, admission: Admission, access: Access, settings: Settings, drain: Drain,
            beside: tuple[server.Beside, ...] = (), timeout: float | None = None) -> None:
    """Apply every patch (but those in settings.skip_patches), once per process, before the worker builds its app and
    server; the worker also runs the servers `beside` its HTTP one (the gRPC service). Warns about each patch in use
    (all but those skipped) whose targets are installed in other versions than it was written for (mismatches())."""
    global _skipped
    skip = _skipped = frozenset(filter(None, (name.strip() for name in settings.skip_patches.split(","))))
    if unknown := skip - set(SKIPPABLE):
        raise ValueError(f"SERVICE_SKIP_PATCHES={settings.skip_patches!r}: {', '.join(sorted(unknown))} is not one of "
                         f"{', '.join(SKIPPABLE)}")
    warn_mismatches(patch for patch in PATCHES if patch not in skip)  # the service starts all the same
    multipart.install()
    if "reuseport" not in skip:
        arbiter.reserve_port({settings.grpc_port: "SERVICE_GRPC_PORT"} if settings.grpc_port else {})
    if "drain" not in skip:
        arbiter.signals()
    server.install(None if "drain" in skip else drain, beside)
    if "door" not in skip:
        door.install(admission, settings.max_body_bytes, access, settings.max_header_bytes, timeout)
    if "asyncio-loop" not in skip:
        door.use_asyncio_loop()
    changes = {"deadline", "request-id", "door-counters"} - skip
    if "door" in skip:
        changes.discard("door-counters")
    bentoml_app.middleware_stack(changes)


def after_load() -> None:
    """Call once the worker has loaded its models."""
    if "gc" not in _skipped:
        gc_tuning.tune()
