"""service/core/admission.py with a fake clock: FIFO places, the floor, refusal only once the queue's head has waited the target, and the caps."""

from __future__ import annotations

import asyncio

import pytest

from service.core.admission import Admission


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(target: float = 0.5, concurrency: int = 2, max_requests: int = 100, max_bytes: int = 10_000, floor: int = 0):
    clock = Clock()
    return Admission(target, concurrency, max_requests, max_bytes, floor=floor, clock=clock), clock


async def settle() -> None:
    """Let every ready task and callback run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def enter(adm: Admission, size: int = 10):
    """Admit one request and start waiting for its place; returns (ticket, task that finishes when served)."""
    assert adm.refusal(size) is None
    ticket = adm.admit(size)
    task = asyncio.ensure_future(adm.serve(ticket))
    await settle()  # let it take a free place or join the queue
    return ticket, task


def test_places_are_given_first_in_first_out():
    async def run():
        adm, _ = make(concurrency=2)
        entered = [await enter(adm) for _ in range(5)]
        served = [t.done() for _, t in entered]
        assert served == [True, True, False, False, False]
        order = []
        for i, (_, task) in enumerate(entered[2:], start=2):
            task.add_done_callback(lambda _, i=i: order.append(i))
        for ticket, _ in entered[:3]:  # each finished request hands its place to the next in line
            adm.finish(ticket, served=True)
            await settle()
        assert order == [2, 3, 4] and adm.serving == 2
        for ticket, _ in entered[3:]:
            adm.finish(ticket, served=True)
        assert (adm.serving, adm.held, adm.bytes) == (0, 0, 0)

    asyncio.run(run())


def test_a_burst_is_queued_and_the_load_after_it_admitted():
    async def run():
        adm, clock = make(target=0.5, concurrency=1)
        queue = [await enter(adm) for _ in range(40)]  # 40 arrive at once, as after a host stall
        refused = 0
        for step in range(60):  # served in 10 ms each; meanwhile one more arrives every 20 ms (half capacity)
            clock.now += 0.01
            ticket, task = queue.pop(0)
            await settle()
            adm.finish(ticket, served=True)
            if step % 2 and adm.refusal(10) is None:
                queue.append(await enter(adm))
            elif step % 2:
                refused += 1
        assert refused == 0

    asyncio.run(run())


def simulate(adm, clock, arrivals_per_tick: float, clients: int = 0, ticks: int = 3000, stall_at: int = -1,
             stall_s: float = 0.0):
    """One request served every 10 ms (concurrency 1); open-loop arrivals at `arrivals_per_tick`, or `clients`
    closed-loop clients (each sends its next request when its answer arrives); the host stalls `stall_s` once, at
    tick `stall_at`. Returns (refused, waits of the served requests, held at the end)."""

    async def run():
        held, refused, waits, due = [], 0, [], 0.0
        for _ in range(clients):
            held.append(await enter(adm))
        for tick in range(ticks):
            clock.now += 0.01 + (stall_s if tick == stall_at else 0.0)
            if held:
                ticket, _ = held.pop(0)
                await settle()
                waits.append(ticket.queued_s)
                adm.finish(ticket, served=True)
                if clients:
                    due += 1
            due += arrivals_per_tick
            while due >= 1:
                due -= 1
                if adm.refusal(10) is None:
                    held.append(await enter(adm))
                else:
                    refused += 1
        return refused, waits, len(held)

    return asyncio.run(run())


def test_open_loop_arrivals_above_capacity_wait_about_the_target_and_the_surplus_is_refused():
    adm, clock = make(target=0.5, concurrency=1, max_requests=10_000)
    refused, waits, held = simulate(adm, clock, arrivals_per_tick=3)  # 3x capacity for 30 s
    assert 0.6 < refused / 9000 < 0.7  # two thirds refused: what cannot be served
    assert max(waits) <= 0.55 and max(waits[-1000:]) <= 0.51  # admitted requests wait about the target at most
    assert 45 <= held <= 52  # the queue stands at the target's worth: 0.5 s x 100/s


def test_closed_loop_clients_are_not_refused_while_they_wait_less_than_the_target():
    adm, clock = make(target=0.5, concurrency=1)
    refused, waits, _ = simulate(adm, clock, arrivals_per_tick=0, clients=45)  # each waits ~0.44 s
    assert refused == 0 and max(waits) > 0.4


def test_closed_loop_clients_that_would_wait_past_the_target_are_refused():
    adm, clock = make(target=0.5, concurrency=1)
    refused, waits, _ = simulate(adm, clock, arrivals_per_tick=0, clients=80)  # each would wait ~0.8 s
    assert refused > 0 and max(waits[-500:]) <= 0.51


@pytest.mark.parametrize("stall_s", [0.0, 0.3, 2.0])
def test_a_closed_loop_population_up_to_the_floor_is_never_refused_however_long_it_waits(stall_s):
    adm, clock = make(target=0.5, concurrency=1, max_requests=512, floor=256)
    refused, waits, held = simulate(adm, clock, arrivals_per_tick=0, clients=256, stall_at=1000, stall_s=stall_s)
    assert refused == 0 and held == 256
    assert 2.5 < waits[-1] < 2.6 and max(waits) >= 2.5 + stall_s - 0.01  # 256 x 10 ms: five times the target


def test_the_floor_does_not_hold_back_what_it_does_not_promise():
    adm, clock = make(target=0.5, concurrency=1, max_requests=512, floor=256)
    refused, waits, held = simulate(adm, clock, arrivals_per_tick=0, clients=300)  # 44 clients beyond the floor
    assert refused > 0 and 256 <= held <= 258
    adm, clock = make(target=0.5, concurrency=1, max_requests=10_000, floor=20)
    refused, waits, held = simulate(adm, clock, arrivals_per_tick=3)  # a fast host: the target's worth exceeds the floor
    assert 0.6 < refused / 9000 < 0.7 and 45 <= held <= 52 and max(waits[-1000:]) <= 0.51


def test_an_open_loop_flood_on_a_host_too_slow_for_the_floor_is_held_at_the_floor():
    adm, clock = make(target=0.5, concurrency=1, max_requests=10_000, floor=200)
    refused, waits, held = simulate(adm, clock, arrivals_per_tick=3)  # 200 requests take 2 s, four times the target
    assert 0.6 < refused / 9000 < 0.7 and 200 <= held <= 202 and 1.99 <= max(waits[-1000:]) <= 2.03


def test_a_queue_that_does_not_move_refuses_once_it_has_stood_a_third_of_the_target():
    async def run():
        adm, clock = make(target=0.6, concurrency=1)
        await enter(adm)  # served, and stuck
        await enter(adm)  # queued behind it
        clock.now += 0.19
        assert adm.refusal(10) is None  # a burst's worth of waiting: no rate measured yet
        clock.now += 0.02
        reason = adm.refusal(10)  # stood 0.21 s > 0.2 s, nothing served: it would wait for ever
        assert reason and "would wait about 999.00 s" in reason and "target 0.6 s" in reason

    asyncio.run(run())


def test_waiting_for_a_free_place_never_counts_when_nothing_is_queued():
    async def run():
        adm, clock = make(target=0.5, concurrency=2)
        a, _ = await enter(adm)
        b, _ = await enter(adm)
        clock.now += 60  # two slow requests in service, nobody queued: nothing has waited
        assert adm.refusal(10) is None

    asyncio.run(run())


def test_target_zero_never_refuses_for_waiting():
    async def run():
        adm, clock = make(target=0.0, concurrency=1)
        await enter(adm)
        await enter(adm)
        clock.now += 1000
        assert adm.refusal(10) is None

    asyncio.run(run())


def test_hard_cap_on_requests_held():
    async def run():
        adm, _ = make(target=0.0, concurrency=1, max_requests=3)
        held = [await enter(adm) for _ in range(3)]
        assert "3 requests are already held (limit 3)" in adm.refusal(10)
        adm.finish(held[0][0], served=True)
        assert adm.refusal(10) is None

    asyncio.run(run())


def test_cap_on_body_bytes_held_but_one_request_always_fits():
    async def run():
        adm, _ = make(max_bytes=100)
        assert adm.refusal(500) is None  # alone, even a body over the cap is admitted (413 limits it)
        ticket, _ = await enter(adm, size=60)
        assert "60 bytes of request bodies are held (limit 100)" in adm.refusal(41)
        assert adm.refusal(40) is None
        adm.finish(ticket, served=True)
        assert adm.bytes == 0

    asyncio.run(run())


def test_a_cancelled_waiter_leaves_the_queue_and_its_place_goes_on():
    async def run():
        adm, clock = make(target=0.5, concurrency=1)
        first, _ = await enter(adm)
        gone, gone_task = await enter(adm)
        last, last_task = await enter(adm)
        gone_task.cancel()  # its client went away (or its deadline passed) while queued
        await settle()
        adm.finish(gone, served=False)
        adm.finish(first, served=True)
        await settle()
        assert last_task.done() and adm.serving == 1
        clock.now += 10
        assert adm.refusal(10) is None  # the cancelled one no longer counts as waiting

    asyncio.run(run())


def test_cancelled_right_after_being_handed_a_place_passes_it_on():
    async def run():
        adm, _ = make(concurrency=1)
        first, _ = await enter(adm)
        second, second_task = await enter(adm)
        third, third_task = await enter(adm)
        adm.finish(first, served=True)  # hands the place to `second` ...
        second_task.cancel()  # ... which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await second_task
        adm.finish(second, served=False)
        await settle()
        assert third_task.done() and adm.serving == 1

    asyncio.run(run())


def test_finish_counts_a_ticket_once_however_often_it_is_called():
    async def run():
        adm, _ = make(concurrency=1)
        ticket, _ = await enter(adm, size=10)
        waiting, task = await enter(adm, size=5)
        adm.finish(ticket, served=True)  # Guard, after the answer ...
        adm.finish(ticket, served=False)  # ... then service/door.py, when the request's task ends
        await settle()
        return adm, task

    adm, task = asyncio.run(run())
    assert task.done() and (adm.held, adm.bytes, adm.finished, adm.serving) == (1, 5, 1, 1)
