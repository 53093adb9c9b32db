"""When the heartbeat's reconciles compare everything (app/full_check.py): the rules alone."""

from __future__ import annotations

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
    now = [100.0]
    check = FullCheck(FakePool(), every_seconds=60.0, clock=lambda: now[0])
    check.begin()
    now[0] += 59.0
    assert not check.begin()
    now[0] += 1.0
    assert check.begin()
    assert not check.begin()


def test_a_comparison_that_fails_makes_the_next_due():
    check = FullCheck(FakePool())
    compared = []

    def fails() -> None:
        compared.append(1)
        raise RuntimeError("database away")

    try:
        check.run_if_due(fails)
    except RuntimeError:
        pass
    check.run_if_due(lambda: compared.append(2))
    check.run_if_due(lambda: compared.append(3))  # nothing since: not due
    assert compared == [1, 2]
