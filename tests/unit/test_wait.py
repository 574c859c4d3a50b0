"""testkit/wait.py: a condition is polled until it holds, and one that never does fails naming what was awaited."""

from __future__ import annotations

import asyncio
import threading

import pytest

from testkit.wait import WaitTimeout, wait_until, wait_until_async


def countdown(looks_before_true: int, value="done"):
    """A predicate that is falsy `looks_before_true` times, then returns `value`; `calls` counts the looks."""
    calls = []

    def predicate():
        calls.append(1)
        return value if len(calls) > looks_before_true else None

    return predicate, calls


def test_returns_the_first_truthy_value_as_soon_as_it_comes():
    predicate, calls = countdown(3, value={"answer": 42})
    assert wait_until(predicate, every_s=0) == {"answer": 42}
    assert len(calls) == 4  # no look after the condition held


def test_a_condition_true_from_the_start_is_looked_at_once_even_with_no_time_left():
    predicate, calls = countdown(0)
    assert wait_until(predicate, deadline_s=0) == "done" and len(calls) == 1


def test_a_condition_that_never_holds_fails_naming_it_and_the_last_value_seen():
    predicate, calls = countdown(10**9)
    with pytest.raises(AssertionError, match=r"waited 0 s \(1 looks\) for the server to exit; last seen: None"):
        wait_until(predicate, deadline_s=0, message="the server to exit")
    assert len(calls) == 1


def test_the_message_may_be_computed_when_it_fails():
    state = {"answers": 3}
    with pytest.raises(WaitTimeout, match="answers seen: 3"):
        wait_until(lambda: state["answers"] >= 5, deadline_s=0, message=lambda: f"answers seen: {state['answers']}")


def test_it_keeps_looking_until_another_thread_makes_the_condition_true():
    """The condition comes true only after the waiter has looked several times: a helper that gave up after its
    first look, or never looked again, would fail here."""
    looked, gate = threading.Event(), threading.Event()
    looks = []

    def predicate():
        looks.append(1)
        if len(looks) == 3:
            looked.set()
        return gate.is_set()

    opener = threading.Thread(target=lambda: looked.wait(60) and gate.set())
    opener.start()
    assert wait_until(predicate, deadline_s=60, every_s=0.001) is True
    opener.join()
    assert len(looks) >= 4


def test_an_exception_in_the_predicate_propagates():
    def broken():
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        wait_until(broken)


def test_async_lets_other_tasks_run_while_it_waits():
    """The condition is made true by a task of the same loop: a waiter that did not yield to the loop would never
    see it, and would fail at its deadline."""

    async def run():
        flag = asyncio.Event()

        async def setter():
            flag.set()

        task = asyncio.ensure_future(setter())
        assert await wait_until_async(flag.is_set, deadline_s=60) is True
        await task

    asyncio.run(run())


def test_async_awaits_a_predicate_that_returns_an_awaitable():
    async def run():
        predicate, calls = countdown(2)

        async def looked_at():
            return predicate()

        assert await wait_until_async(looked_at, every_s=0) == "done" and len(calls) == 3

    asyncio.run(run())


def test_async_fails_naming_what_it_waited_for():
    async def run():
        await wait_until_async(lambda: 0, deadline_s=0, message="the model to be entered")

    with pytest.raises(WaitTimeout, match="for the model to be entered; last seen: 0"):
        asyncio.run(run())
