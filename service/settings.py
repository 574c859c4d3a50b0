"""Every setting of the service, read once from the environment and validated (the README's configuration table)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Mapping

BACKENDS = ("onnx", "torchscript")
DEVICES = ("auto", "cpu", "cuda")
MiB = 1024 * 1024


def _env(name: str, help: str, secret: bool = False, path: bool = False, **kwargs):
    """A setting read from `name`; a `secret` one keeps its case and is never shown (repr, reports); a `path` keeps
    its case."""
    return field(metadata={"env": name, "help": help, "secret": secret, "path": path}, repr=not secret, **kwargs)


@dataclass(frozen=True)
class Settings:
    """One worker's settings; ``Settings.from_env()`` reads them, ``Settings()`` is the documented defaults."""

    backend: str = _env("SERVICE_BACKEND", "onnx (ONNX Runtime) or torchscript (needs torch)", default="onnx")
    device: str = _env("SERVICE_DEVICE", "auto (CUDA when the backend can use it, else CPU), cpu or cuda",
                       default="auto")
    # 1, not ONNX Runtime's one per core: the event loop needs a core of its own (docs/decisions/one-intra-op-thread.md).
    threads: int = _env("SERVICE_THREADS", "intra-op threads per model call; 0 = the library's default (one per core)",
                        default=1)
    max_batch: int = _env("SERVICE_MAX_BATCH", "most images per digit-model call; concurrent requests share calls",
                          default=64)
    batch_gather_ms: float = _env("SERVICE_BATCH_GATHER_MS", "under load, how long a digit-model call may wait for "
                                  "as many requests as recent calls held; 0 = never (a lone request never waits)",
                                  default=2.0)
    max_body_bytes: int = _env("SERVICE_MAX_BODY_BYTES", "larger request bodies get 413 before they are parsed",
                               default=16 * MiB)
    max_header_bytes: int = _env("SERVICE_MAX_HEADER_BYTES", "a request line and headers larger than this get 431 "
                                 "and the connection is closed", default=32 * 1024)
    body_timeout_s: float = _env("SERVICE_BODY_TIMEOUT_S", "a body not fully received by then gets 408",
                                 default=10.0)
    queue_target_s: float = _env("SERVICE_QUEUE_TARGET_S", "above SERVICE_QUEUE_FLOOR requests held, a request "
                                 "that would wait this long in the queue gets 429; 0 = never refuse for waiting",
                                 default=0.6)
    queue_floor: int = _env("SERVICE_QUEUE_FLOOR", "requests a worker always holds before SERVICE_QUEUE_TARGET_S "
                            "applies: a closed-loop population this size is never refused, on any host", default=256)
    concurrency: int = _env("SERVICE_CONCURRENCY", "requests a worker serves at once; the rest wait in its "
                            "first-in-first-out queue", default=32)
    max_requests: int = _env("SERVICE_MAX_REQUESTS", "hard cap on requests a worker holds (queued, served or "
                             "being received); more get 429", default=512)
    max_inflight_bytes: int = _env("SERVICE_INFLIGHT_BYTES", "request bodies a worker holds at once; a request "
                                   "past it gets 429 (bounds memory in a burst)", default=64 * MiB)
    drain_s: float = _env("SERVICE_DRAIN_S", "after SIGTERM, seconds a worker keeps accepting and answering "
                          "(/readyz 503, every answer Connection: close) before it stops accepting; longer than a "
                          "load balancer takes to stop sending (docs/deploy.md)", default=5.0)
    grpc_access_log: int = _env("SERVICE_GRPC_ACCESS_LOG", "1: a line per gRPC call in BentoML's access log; 0: none "
                                "(every call is counted in /metrics' grpc_server_handled_total all the same): a line "
                                "per call cost a sixth of the calls a 2-core host answers (docs/decisions/grpc.md)",
                                default=0)
    serving_file: str = _env("SERVICE_SERVING_FILE", "the serving file: which version of each model serves, and its "
                             "canary and shadow (default: models/serving.json); re-read when it changes",
                             path=True, default="")
    grpc_port: int = _env("SERVICE_GRPC_PORT", "port of the Open Inference Protocol's gRPC service, on the HTTP "
                          "server's host, served by every worker; 0 = no gRPC", default=8001)
    api_tokens: str = _env("SERVICE_API_TOKENS", "bearer tokens, separated by commas: when set, every route but "
                           "the probes, /metrics and the web page needs Authorization: Bearer <token> (401)",
                           secret=True, default="")
    api_tokens_file: str = _env("SERVICE_API_TOKENS_FILE", "a file of bearer tokens, one per line (a mounted secret); "
                                "instead of SERVICE_API_TOKENS", secret=True, default="")
    admin_tokens: str = _env("SERVICE_ADMIN_TOKENS", "bearer tokens for model changes (the v2 model repository: index, "
                             "load, unload), separated by commas; unset: model changes answer 403. A prediction "
                             "token does not grant them; an admin token grants predictions too", secret=True,
                             default="")
    admin_tokens_file: str = _env("SERVICE_ADMIN_TOKENS_FILE", "a file of admin tokens, one per line; instead of "
                                  "SERVICE_ADMIN_TOKENS", secret=True, default="")
    prediction_stats: int = _env("SERVICE_PREDICTION_STATS", "1: prediction statistics per model version in /metrics "
                                 "(classes, confidence, inputs outside the reference, drift); 0: off (for A/B "
                                 "measurement)", default=1)
    payload_share: float = _env("SERVICE_PAYLOAD_SHARE", "share of requests whose inputs and outputs are logged "
                                "(bentoml.monitor, rotating JSON-lines files; docs/operations.md); 0 = off",
                                default=0.0)
    payload_dir: str = _env("SERVICE_PAYLOAD_DIR", "folder of the payload logs (relative to the working directory)",
                            path=True, default="monitoring")
    payload_keep_days: int = _env("SERVICE_PAYLOAD_KEEP_DAYS", "days of payload logs kept (one file a day per worker)",
                                  default=7)
    skip_patches: str = _env("SERVICE_SKIP_PATCHES", "comma-separated performance patches of upstream internals "
                             "to leave out, for A/B measurement only (service/upstream)", default="")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        values = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is None:
                continue
            kind = type(f.default)
            try:
                if kind is str:
                    keep = f.metadata["secret"] or f.metadata["path"]
                    values[f.name] = raw.strip() if keep else raw.strip().lower()
                else:
                    values[f.name] = kind(raw)
            except ValueError:
                raise ValueError(f"{f.metadata['env']}={raw!r}: expected a {kind.__name__}") from None
        return cls(**values)

    def __post_init__(self) -> None:
        def fail(name: str, rule: str) -> None:
            env = next(f.metadata["env"] for f in dataclasses.fields(self) if f.name == name)
            raise ValueError(f"{env}={getattr(self, name)!r}: {rule}")

        if self.backend not in BACKENDS:
            fail("backend", f"choose one of {', '.join(BACKENDS)}")
        if self.device not in DEVICES:
            fail("device", f"choose one of {', '.join(DEVICES)}")
        for name in ("threads", "queue_floor"):
            if getattr(self, name) < 0:
                fail(name, "must be >= 0")
        if not 0 <= self.grpc_port <= 65535:
            fail("grpc_port", "must be a port number, 1 to 65535, or 0 for no gRPC")
        for name in ("max_batch", "max_body_bytes", "max_header_bytes", "concurrency", "max_requests",
                     "max_inflight_bytes"):
            if getattr(self, name) < 1:
                fail(name, "must be >= 1")
        for name in ("body_timeout_s",):
            if not getattr(self, name) > 0:
                fail(name, "must be > 0")
        for name in ("queue_target_s", "drain_s", "batch_gather_ms"):
            if not getattr(self, name) >= 0:
                fail(name, "must be >= 0")
        for name in ("prediction_stats", "grpc_access_log"):
            if getattr(self, name) not in (0, 1):
                fail(name, "must be 0 or 1")
        if not 0 <= self.payload_share <= 1:
            fail("payload_share", "must be from 0 to 1")
        if self.payload_keep_days < 1:
            fail("payload_keep_days", "must be >= 1")

    def shown(self) -> dict[str, object]:
        """Every setting by name, secrets as "(set)" or "" (for logs and results files)."""
        return {f.name: ("(set)" if getattr(self, f.name) else "") if f.metadata["secret"] else getattr(self, f.name)
                for f in dataclasses.fields(self)}

    @classmethod
    def documented(cls) -> list[tuple[str, str, str]]:
        """(variable, default, meaning) for every setting: what the README's table lists."""
        return [(f.metadata["env"], str(f.default), f.metadata["help"]) for f in dataclasses.fields(cls)]
