"""A slower or stalling host on demand: CPU hogs (busy processes) beside a run, and freezes of a server's workers (SIGSTOP, SIGCONT)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Iterator

BUSY = "while True: pass"


@contextlib.contextmanager
def cpu_hogs(n: int) -> Iterator[list[int]]:
    """`n` processes that each keep one core busy until the block ends (stopped by their PIDs); yields the PIDs."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(max(n, 0))]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


@contextlib.contextmanager
def freezing(pids: Callable[[], list[int]], ms: float, every: float = 1.0, once_after: float | None = None) -> Iterator[list[float]]:
    """Freeze the processes `pids()` names for `ms` milliseconds every `every` seconds (or once, `once_after` seconds in)
    until the block ends, as a host that deschedules them does; yields the list of times (monotonic) each freeze began."""
    done, freezes = threading.Event(), []
    if ms <= 0:
        yield freezes
        return

    def freeze() -> None:
        frozen = pids()
        freezes.append(time.monotonic())
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(ms / 1000)
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)

    def run() -> None:
        if once_after is not None:
            if not done.wait(once_after):
                freeze()
            return
        while not done.wait(every):
            freeze()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield freezes
    finally:
        done.set()
        thread.join()
