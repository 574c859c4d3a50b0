"""service/batching.py: concurrent calls share model calls, a lone call runs at once, errors and cancellations stay contained."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from service.inference.batching import Batcher
from testkit.wait import wait_until_async


class Model:
    """Doubles its input; records every batch it was called with; can be held (`gate`) to let calls pile up, and says
    when a batch has entered it (`entered`)."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.entered.set()
        if not self.gate.wait(60):
            raise TimeoutError("the test never opened the model's gate")
        self.calls.append(len(x))
        return x * 2


async def turns(n: int = 5) -> None:
    """Let every ready task run until it next waits (here: calls just made put their images in the queue)."""
    for _ in range(n):
        await asyncio.sleep(0)


def images(n: int, start: float = 0) -> np.ndarray:
    return (np.arange(n, dtype=np.float32) + start).reshape(n, 1)


def test_a_lone_call_runs_at_once_alone():
    model = Model()
    seen = []
    batcher = Batcher(model, max_batch=64, observe=lambda x, y, r: seen.append((len(x), r)))

    async def run():
        return await batcher(images(1, 7))

    np.testing.assert_array_equal(asyncio.run(run()), [[14]])
    assert model.calls == [1] and seen == [(1, 1)]


def test_calls_made_together_share_one_model_call_and_get_their_own_rows():
    model = Model()
    seen = []
    batcher = Batcher(model, max_batch=64, observe=lambda x, y, r: seen.append((len(x), r)))

    async def run():
        return await asyncio.gather(*(batcher(images(k + 1, 10 * k)) for k in range(5)))

    results = asyncio.run(run())
    assert model.calls == [15] and seen == [(15, 5)]
    for k, out in enumerate(results):
        np.testing.assert_array_equal(out, images(k + 1, 10 * k) * 2)


def test_calls_arriving_during_a_batch_form_the_next_one():
    model = Model()
    batcher = Batcher(model, max_batch=64)

    async def run():
        model.gate.clear()
        first = asyncio.ensure_future(batcher(images(1)))
        await wait_until_async(model.entered.is_set, message="the first batch to enter the model")  # held there
        later = [asyncio.ensure_future(batcher(images(1, k))) for k in range(10)]
        await turns()  # the ten are queued
        model.gate.set()
        await asyncio.gather(first, *later)

    asyncio.run(run())
    assert model.calls == [1, 10]


def test_batches_stop_at_max_batch_and_a_large_call_runs_whole():
    model = Model()
    batcher = Batcher(model, max_batch=8)

    async def run():
        outs = await asyncio.gather(*(batcher(images(3, k)) for k in range(4)), batcher(images(20)))
        return outs

    outs = asyncio.run(run())
    assert model.calls == [6, 6, 20]  # 3+3 fit in 8, 3+3+3 would not; the 20-image call alone
    np.testing.assert_array_equal(outs[-1], images(20) * 2)


def test_a_model_error_reaches_every_caller_of_that_batch_and_the_next_batch_works():
    calls = []

    def flaky(x):
        calls.append(len(x))
        if len(calls) == 1:
            raise RuntimeError("model failed")
        return x

    batcher = Batcher(flaky, max_batch=64)

    async def run():
        results = await asyncio.gather(batcher(images(1)), batcher(images(1)), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        return await batcher(images(2))

    np.testing.assert_array_equal(asyncio.run(run()), images(2))
    assert calls == [2, 2]


def test_a_cancelled_caller_does_not_disturb_the_others():
    model = Model()
    batcher = Batcher(model, max_batch=64)

    async def run():
        model.gate.clear()
        first = asyncio.ensure_future(batcher(images(1)))
        await wait_until_async(model.entered.is_set, message="the first batch to enter the model")  # held there
        gone = asyncio.ensure_future(batcher(images(1, 5)))
        kept = asyncio.ensure_future(batcher(images(1, 9)))
        await turns()  # both are queued
        gone.cancel()  # e.g. its deadline passed while it was queued
        model.gate.set()
        await first
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await kept

    np.testing.assert_array_equal(asyncio.run(run()), [[18]])
    assert model.calls == [1, 1]  # the cancelled call was dropped from the batch


def test_max_batch_must_be_positive_and_gather_s_not_negative():
    with pytest.raises(ValueError):
        Batcher(lambda x: x, max_batch=0)
    with pytest.raises(ValueError):
        Batcher(lambda x: x, max_batch=8, gather_s=-0.001)


# Gathering under load. HOUR: a wait no test can sit out, so a call answered came by its company, not the timer.
HOUR = 3600.0


async def busy(batcher: Batcher, batches: int = 10, size: int = 5) -> None:
    """Load as the batcher sees it: `batches` batches of `size` calls made together."""
    for _ in range(batches):
        await asyncio.gather(*(batcher(images(1, k)) for k in range(size)))


def test_under_load_a_batch_waits_for_as_many_calls_as_recent_batches_held():
    def scenario(gather_s: float) -> list[int]:
        model = Model()
        batcher = Batcher(model, max_batch=64, gather_s=gather_s)

        async def run():
            await busy(batcher)  # ten batches of 5: about 4.6 requests per batch
            first = asyncio.ensure_future(batcher(images(1)))
            await turns()  # without gathering, the drain takes the lone call here
            later = []
            for k in range(3):  # the rest of the load, parsed a turn apart
                later.append(asyncio.ensure_future(batcher(images(1, k))))
                await turns()
            await asyncio.wait_for(asyncio.gather(first, *later), 60)

        asyncio.run(run())
        return model.calls[10:]

    assert scenario(HOUR) == [4]  # the lone first call waited for its usual company
    assert scenario(0.0)[0] == 1  # gather_s = 0: it ran alone


def test_a_lone_call_never_waits_even_with_gathering_on():
    model = Model()
    batcher = Batcher(model, max_batch=64, gather_s=HOUR)

    async def run():
        for k in range(3):
            await asyncio.wait_for(batcher(images(1, k)), 60)

    asyncio.run(run())
    assert model.calls == [1, 1, 1] and batcher.typical == 1.0


def test_a_gathering_batch_runs_with_what_it_has_after_gather_s_and_load_leaving_stops_gathering():
    model = Model()
    batcher = Batcher(model, max_batch=64, gather_s=0.01)

    async def run():
        await busy(batcher)
        assert int(batcher.typical) == 4
        lone = 0
        while batcher.typical >= 2:  # each lone call waits at most gather_s for company that never comes
            await asyncio.wait_for(batcher(images(1)), 60)
            lone += 1
        return lone

    lone = asyncio.run(run())
    assert model.calls[10:] == [1] * lone and 5 <= lone <= 12
