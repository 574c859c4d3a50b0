"""Waiting in tests on an event, never on time: poll a condition until it holds, up to a generous deadline.

A fixed sleep is a guess at how long something takes: too short on a busy 2-core CI host (a flaky failure), too
long everywhere else (a slow suite). ``wait_until`` returns as soon as its condition holds; its deadline only
turns a condition that never holds into a failure naming what was awaited, so it is generous (60 s): it bounds
how long a broken test hangs, not how fast the code must be (speed is measured by the harness's benchmarks,
not asserted by tests).

    wait_until(lambda: server.proc.poll() is not None, message="the server to exit")
    counts = wait_until(lambda: (c := counted()) == expected and c, message=lambda: f"counts {counted()}")
    await wait_until_async(model.entered.is_set, message="the first batch to enter the model")

Where a gate can be set by the code under test (an ``asyncio.Event`` or ``threading.Event``), or a fake clock
stands in for time, prefer those: they need no polling at all.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

DEADLINE_S = 60.0  # how long a condition may take to hold before the test fails: generous, for busy hosts
EVERY_S = 0.02  # between two looks at the condition

Message = str | Callable[[], str] | None


class WaitTimeout(AssertionError):
    """A condition did not hold within its deadline (an AssertionError: pytest reports a failure, not an error)."""


def _failure(deadline_s: float, message: Message, last: Any, looks: int) -> WaitTimeout:
    what = message() if callable(message) else message
    return WaitTimeout(f"waited {deadline_s:g} s ({looks} looks) for {what or 'a condition'}; "
                       f"last seen: {last!r:.500}")


def wait_until(predicate: Callable[[], T], deadline_s: float = DEADLINE_S, every_s: float = EVERY_S,
               message: Message = None) -> T:
    """Call ``predicate()`` every ``every_s`` s until it returns something truthy, and return that.

    It is called at least once, and its last look comes after the deadline has passed; then WaitTimeout names
    ``message`` (a string, or a callable giving one when it fails: the last state seen, say) and the last value.
    An exception ``predicate`` raises propagates at once."""
    end = time.monotonic() + deadline_s
    looks = 0
    while True:
        passed = time.monotonic() >= end
        value = predicate()
        looks += 1
        if value:
            return value
        if passed:
            raise _failure(deadline_s, message, value, looks)
        time.sleep(every_s)


async def wait_until_async(predicate: Callable[[], T | Awaitable[T]], deadline_s: float = DEADLINE_S,
                           every_s: float = EVERY_S, message: Message = None) -> T:
    """``wait_until`` inside an event loop: ``predicate`` may return a value or an awaitable of one, and the loop
    runs other tasks between two looks (``asyncio.sleep``), so the condition can come true while this waits."""
    end = time.monotonic() + deadline_s
    looks = 0
    while True:
        passed = time.monotonic() >= end
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        looks += 1
        if value:
            return value
        if passed:
            raise _failure(deadline_s, message, value, looks)
        await asyncio.sleep(every_s)
