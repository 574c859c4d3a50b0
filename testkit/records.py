"""One row per request sent by the load driver (when scheduled, sent, answered, with what) and the summaries every command reports."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# status 0 = no HTTP answer; `error` indexes this table
ERRORS = ("", "connect", "closed", "timeout", "bad response", "unanswered at the end")


@dataclass
class Records:
    """Times in seconds from the start of the run; latency from the send to the end of the answer."""

    kinds: list[str]  # kind[i] indexes this (the payload names of the mix)
    kind: np.ndarray
    scheduled: np.ndarray
    sent: np.ndarray
    latency: np.ndarray
    status: np.ndarray
    error: np.ndarray
    duration: float
    client_cpu_s: float = 0.0  # the driver's own CPU over the whole run (user + system)
    client_wall_s: float = 0.0  # ... and the run's wall time, sending and draining
    max_connections: int = 0
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_rows(cls, kinds: list[str], rows: list[tuple], duration: float, **kw) -> "Records":
        a = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
        return cls(kinds, a[:, 0].astype(np.int32), a[:, 1], a[:, 2], a[:, 3] - a[:, 2], a[:, 4].astype(np.int32),
                   a[:, 5].astype(np.int32), duration, **kw)

    def __len__(self) -> int:
        return len(self.status)

    def select(self, mask: np.ndarray, duration: float) -> "Records":
        return Records(self.kinds, self.kind[mask], self.scheduled[mask], self.sent[mask], self.latency[mask],
                       self.status[mask], self.error[mask], duration, self.client_cpu_s, self.client_wall_s, self.max_connections)

    def window(self, start: float, end: float) -> "Records":
        """The requests scheduled in [start, end) (the CPU figures stay those of the whole run)."""
        return self.select((self.scheduled >= start) & (self.scheduled < end), end - start)

    @property
    def ok(self) -> np.ndarray:
        return (self.status >= 200) & (self.status < 300)

    @property
    def refused(self) -> np.ndarray:
        return self.status == 429

    @property
    def transport_errors(self) -> np.ndarray:
        return self.status == 0

    def ok_per_s(self) -> float:
        """Goodput: 2xx answers per second (a fast 429 is not throughput)."""
        return float(self.ok.sum() / self.duration) if self.duration else 0.0

    def ok_done_per_s(self, start: float, end: float) -> float:
        """2xx answers completed in [start, end), per second: goodput while a load lasts, not after it."""
        done = self.sent + self.latency
        return float((self.ok & (done >= start) & (done < end)).sum() / (end - start)) if end > start else 0.0

    def by_status(self) -> dict[str, int]:
        keys = [str(s) if s else f"error:{ERRORS[e]}" for s, e in zip(self.status.tolist(), self.error.tolist())]
        values, counts = np.unique(np.asarray(keys, dtype=str), return_counts=True) if keys else ([], [])
        return {str(k): int(n) for k, n in zip(values, counts)}

    def by_kind(self) -> dict[str, int]:
        return {k: int((self.kind == i).sum()) for i, k in enumerate(self.kinds) if (self.kind == i).any()}

    def not_ok(self, limit: int = 100) -> list[dict]:
        """When and what the first `limit` non-2xx answers and transport errors were (bursts point at a stall)."""
        rows = np.flatnonzero(~self.ok)[:limit]
        return [{"t_s": round(float(self.scheduled[i]), 3), "latency_ms": round(1000 * float(self.latency[i]), 1),
                 "status": int(self.status[i]), "kind": self.kinds[self.kind[i]], "error": ERRORS[self.error[i]]}
                for i in rows]

    def summary(self) -> dict:
        ok, refused = self.ok, self.refused
        lag = self.sent - self.scheduled
        return {
            "requests": len(self),
            "seconds": round(self.duration, 2),
            "ok_2xx": int(ok.sum()),
            "ok_per_s": round(self.ok_per_s(), 1),
            "non_2xx": int(((self.status > 0) & ~ok).sum()),
            "refused_429": int(refused.sum()),
            "refused_share": round(float(refused.mean()), 4) if len(self) else 0.0,
            "transport_errors": int(self.transport_errors.sum()),
            "by_status": self.by_status(),
            "ok_latency_ms": percentiles(self.latency[ok]),
            "refused_latency_ms": percentiles(self.latency[refused]),
            "client": {"cpu_s": round(self.client_cpu_s, 3), "max_connections": self.max_connections,
                       "cores": round(self.client_cpu_s / self.client_wall_s, 3) if self.client_wall_s else None,
                       "send_lag_ms": percentiles(lag, (0.99,))},
        }


def percentiles(seconds: np.ndarray, qs=(0.5, 0.9, 0.99)) -> dict:
    """Milliseconds: the given quantiles and the maximum (empty: all None)."""
    names = [f"p{round(100 * q, 1):g}" for q in qs] + ["max"]
    if not len(seconds):
        return dict.fromkeys(names)
    values = [*np.quantile(seconds, qs), seconds.max()]
    return {n: round(1000 * float(v), 2) for n, v in zip(names, values)}
