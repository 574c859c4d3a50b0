"""service/lifecycle.py: a worker's drain moves from serving to draining to closing (and forced), on its own clock."""

from service.lifecycle import Drain


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_serving_until_sigterm_then_draining_for_its_seconds():
    clock = Clock()
    drain = Drain(5.0, clock)
    assert not drain.draining and not drain.over() and not drain.closing and not drain.forced
    clock.now += 50  # time alone never ends serving
    assert not drain.draining and not drain.over()
    assert drain.begin() is True
    assert drain.draining and not drain.over() and not drain.closing
    clock.now += 4.99
    assert not drain.over()
    clock.now += 0.01
    assert drain.over() and not drain.closing  # the server closes its listeners when it sees this
    drain.close()
    assert drain.closing and drain.draining and not drain.forced


def test_a_second_begin_changes_nothing():
    clock = Clock()
    drain = Drain(5.0, clock)
    drain.begin()
    clock.now += 3
    assert drain.begin() is False
    clock.now += 2
    assert drain.over()  # counted from the first SIGTERM


def test_forced_closes_at_once_even_before_a_drain():
    drain = Drain(5.0, Clock())
    drain.force()
    assert drain.forced and drain.closing and drain.draining


def test_a_zero_drain_is_over_at_sigterm():
    drain = Drain(0.0, Clock())
    drain.begin()
    assert drain.over()


def test_remaining_counts_down_from_sigterm():
    clock = Clock()
    drain = Drain(5.0, clock)
    assert drain.remaining() == 5.0
    drain.begin()
    clock.now += 3.5
    assert drain.remaining() == 1.5
    clock.now += 2
    assert drain.remaining() == 0.0
