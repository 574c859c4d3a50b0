"""A worker's drain after SIGTERM: for ``seconds`` it still accepts and answers, reports itself not ready and closes every connection it answers on; then it stops accepting and exits once what it holds is answered.

The phases, in order (each only ever moves forward):

* serving: ready.
* draining (``begin()``, called on SIGTERM by service/upstream/server.py): not ready (/readyz and
  /v2/health/ready answer 503, gRPC health NOT_SERVING), every answer carries ``Connection: close`` so that
  keep-alive clients reconnect, through their load balancer, to another replica. A load balancer
  that probes readiness stops sending within its probe period; ``seconds`` must be longer than that.
* closing (``close()``, once ``over()``): the listener is closed; what was already accepted is answered.
* ``forced`` (a second SIGTERM, or SIGINT): nothing more is waited for.

This module does no I/O; its clock is injectable (tests/unit/test_drain_state.py).
"""

from __future__ import annotations

import time
from typing import Callable


class Drain:
    """The drain of one worker process: begun by the server on SIGTERM, read by the readiness probes and the protocols."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self.clock = clock
        self.began: float | None = None  # clock() at SIGTERM
        self.closing = False  # the listeners are closed
        self.forced = False  # stop at once

    @property
    def draining(self) -> bool:
        """From SIGTERM on (closing and forced included)."""
        return self.began is not None

    def begin(self) -> bool:
        """Start the drain (safe in a signal handler: it only sets a number); False if it had begun already."""
        if self.began is not None:
            return False
        self.began = self.clock()
        return True

    def over(self) -> bool:
        """The drain period has passed: time to stop accepting."""
        return self.began is not None and self.clock() - self.began >= self.seconds

    def remaining(self) -> float:
        """Seconds until the drain is over (0 once it is; the whole period before it begins)."""
        if self.began is None:
            return self.seconds
        return max(0.0, self.seconds - (self.clock() - self.began))

    def close(self) -> None:
        """The listeners are being closed (the drain is over, or the stop is forced)."""
        if self.began is None:
            self.began = self.clock()
        self.closing = True

    def force(self) -> None:
        """Stop at once: answers in progress are not waited for."""
        self.close()
        self.forced = True
