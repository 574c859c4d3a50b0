"""prometheus_client's Histogram filled a batch at a time: ``observe_counts(child, counts, total)`` adds ``counts[i]`` observations to bucket i and ``total`` to the sum, what ``counts[i]`` calls of ``observe()`` would do, in one step per bucket.

Why: the prediction statistics (service/monitoring.py) are counted once per model call, not once per row: a batch of
1,024 images would otherwise cost 1,024 ``observe()`` calls, each a lock and a write to the multiprocess file. There
is no public way to observe a value n times (prometheus_client 0.26.0: ``Histogram._buckets``, ``._sum``, each a
value with ``inc``; buckets hold non-cumulative counts, cumulated at collection).
"""

from __future__ import annotations

from typing import Any, Sequence


def observe_counts(child: Any, counts: Sequence[int], total: float) -> None:
    """Add counts[i] observations to bucket i of the labelled Histogram `child` (its buckets in order, +Inf last) and
    `total` to its sum."""
    buckets = child._buckets
    if len(counts) != len(buckets):
        raise ValueError(f"{len(counts)} counts for a histogram of {len(buckets)} buckets")
    for bucket, n in zip(buckets, counts):
        if n:
            bucket.inc(int(n))
    child._sum.inc(float(total))
