"""When the heartbeat's reconciles compare everything (app/full_check.py): the rules alone."""

from __future__ import annotations

import time

from app.full_check import FullCheck


class FakePool:
    failures = 0


def test_the_first_heartbeat_compares_and_the_next_does_not():
    check = FullCheck(FakePool())
    assert check.begin()
    assert not check.begin()


def test_a_database_failure_since_the_last_comparison_makes_the_next_due():
    pool = FakePool()
    check = FullCheck(pool)
    check.begin()
    pool.failures += 1
    assert check.begin()
    assert not check.begin()


def test_a_mark_makes_the_next_due_also_when_made_during_a_comparison():
    check = FullCheck(FakePool())
    assert check.begin()
    check.mark()  # the bus reconnected while it ran, say
    assert check.begin()
    assert not check.begin()


def test_a_comparison_is_due_once_the_interval_passed_with_nothing_reported():
    check = FullCheck(FakePool(), every_seconds=0.05)
    check.begin()
    assert not check.begin()
    time.sleep(0.06)
    assert check.begin()
    assert not check.begin()
