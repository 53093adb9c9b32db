"""The sign-in rate limit on its own, with a clock the tests move."""

from __future__ import annotations

import pytest

from app.throttle import Throttle, TooManyAttempts


def test_the_first_attempts_are_free_then_each_waits_longer_than_the_one_before():
    throttle = Throttle(free_attempts=3, first_delay_seconds=0.25, max_delay_seconds=5, max_wait_seconds=100)
    now, waits = 1000.0, []
    for _ in range(7):
        wait = throttle.reserve(["user:ann"], now)
        waits.append(wait)
        now += wait  # each guess is sent as soon as it may run
    assert waits == [0, 0, 0, 0.25, 0.5, 1.0, 2.0]


def test_attempts_sent_at_once_queue_one_behind_the_other():
    """N parallel requests used to wait the same delay and then be N guesses at once."""
    throttle = Throttle(free_attempts=3, first_delay_seconds=0.25, max_delay_seconds=5, max_wait_seconds=100)
    waits = [throttle.reserve(["user:ann"], 1000.0) for _ in range(7)]
    assert waits == [0, 0, 0, 0.25, 0.75, 1.75, 3.75]


def test_an_attempt_that_would_wait_too_long_is_refused_and_not_counted():
    throttle = Throttle(free_attempts=1, first_delay_seconds=1, max_delay_seconds=1, max_wait_seconds=2)
    assert [throttle.reserve(["user:ann"], 0.0) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(TooManyAttempts) as refused:
        throttle.reserve(["user:ann"], 0.5)
    assert refused.value.retry_after == 3  # free at 3.0, rounded up from 2.5
    assert throttle.states["user:ann"].failures == 3
    assert throttle.reserve(["user:ann"], 1.0) == 2.0  # free again once the queue moved


def test_the_slowest_spacing_is_the_cap_however_long_the_attack():
    throttle = Throttle(free_attempts=3, first_delay_seconds=0.25, max_delay_seconds=5, max_wait_seconds=100)
    now = 0.0
    for _ in range(5000):
        now += throttle.reserve(["user:ann"], now)
    assert throttle.delay_after(throttle.states["user:ann"].failures) == 5
    assert throttle.reserve(["user:ann"], now) == 5


def test_an_attempt_waits_for_the_slowest_of_its_keys():
    throttle = Throttle(free_attempts=1, first_delay_seconds=1, max_delay_seconds=8, max_wait_seconds=100)
    for _ in range(3):
        throttle.reserve(["addr:1.2.3.4", "user:ann"], 0.0)  # spaced 1, 2, 4: both free at 7
    assert throttle.reserve(["addr:9.9.9.9", "user:ann"], 0.0) == 7  # a new address: the user's queue
    assert throttle.reserve(["addr:1.2.3.4", "user:bob"], 0.0) == 7  # a new user: the address's queue


def test_a_success_restarts_its_user_but_only_uncounts_itself_on_a_shared_address():
    throttle = Throttle(free_attempts=3, first_delay_seconds=1, max_delay_seconds=8, max_wait_seconds=100)
    for _ in range(2):
        throttle.reserve(["addr:office", "user:ann"], 0.0)
    throttle.reserve(["addr:office", "user:bob"], 0.0)
    throttle.forget("user:bob")
    throttle.uncount("addr:office")
    assert "user:bob" not in throttle.states
    assert throttle.states["addr:office"].failures == 2  # ann's two guesses still count there


def test_the_table_stays_bounded_and_keeps_the_keys_tried_last():
    throttle = Throttle(max_keys=20, max_wait_seconds=10**9)
    for n in range(50):
        throttle.reserve(["addr:sprayer", f"user:sprayed-{n}"], float(n))
    assert len(throttle.states) == 20
    assert throttle.states["addr:sprayer"].failures == 50


def test_keys_are_forgotten_after_the_memory():
    throttle = Throttle(memory_seconds=60)
    for n in range(100):
        throttle.reserve([f"user:old-{n}"], 0.0)
    throttle.reserve(["user:new"], 61.0)
    assert set(throttle.states) == {"user:new"}
