"""CPython's garbage collector tuned for a worker that holds many live requests: the start-up heap frozen, full collections a tenth as often (``gc.freeze``, ``gc.set_threshold``).

What a full collection finds under load is the state of the requests in flight (tasks, coroutines,
closures: about a hundred objects each), all alive; scanning it stalls the event loop for tens of
milliseconds about once a second in a flood, collecting nothing (docs/decisions/gc-threshold.md).
Young generations are unchanged, so cyclic garbage is still collected soon after it is made.
"""

from __future__ import annotations

import gc

FULL_GC_EVERY = 100  # middle-generation collections between two full ones (CPython: 10)


def tune() -> None:
    """Call once the worker has loaded its models: what is loaded lives as long as the worker."""
    gc.freeze()
    gc.set_threshold(*gc.get_threshold()[:2], FULL_GC_EVERY)
