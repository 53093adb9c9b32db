"""Jobs run in kept greenlets (app/runners.py): reused, concurrent when they wait, bounded."""

from __future__ import annotations

import logging
from collections.abc import Callable

import gevent
import greenlet
import pytest
from gevent.event import Event

from app.runners import Runners

WAIT_SECONDS = 5.0


@pytest.fixture
def runners() -> Runners:
    return Runners(gevent.get_hub(), idle_max=2)


def run_and_wait(runners: Runners, job: Callable[..., None], *args) -> None:
    """Hand `job(*args)` to a runner and wait until it has returned (or raised)."""
    done = Event()

    def then_done() -> None:
        try:
            job(*args)
        finally:
            done.set()

    runners.run_soon(then_done)
    assert done.wait(WAIT_SECONDS), "the job never ran"


def in_loop(call: Callable[[], None]) -> None:
    """Run `call` in the event loop, as a libev callback does, and wait until it has."""
    done = Event()

    def then_done() -> None:
        call()
        done.set()

    gevent.get_hub().loop.run_callback(then_done)
    assert done.wait(WAIT_SECONDS)


def test_jobs_one_after_another_run_in_the_same_greenlet(runners):
    ran_in: list[greenlet.greenlet] = []
    for _ in range(3):
        run_and_wait(runners, lambda: ran_in.append(greenlet.getcurrent()))
    assert len(ran_in) == 3 and len(set(ran_in)) == 1
    assert ran_in[0] is not greenlet.getcurrent()


def test_jobs_that_wait_run_side_by_side_and_the_runners_beyond_the_cap_end(runners):
    release = Event()
    waiting, done = [], []
    all_waiting, all_done = Event(), Event()

    def waits(n: int) -> None:
        waiting.append(n)
        if len(waiting) == 5:
            all_waiting.set()
        release.wait()
        done.append(n)
        if len(done) == 5:
            all_done.set()

    for n in range(5):
        runners.run_soon(waits, n)
    assert all_waiting.wait(WAIT_SECONDS)  # all five wait at once, each in its own runner
    assert runners.idle == []
    release.set()
    assert all_done.wait(WAIT_SECONDS)  # (each runner parks or ends before the next wakes)
    assert sorted(done) == [0, 1, 2, 3, 4]
    assert len(runners.idle) == 2  # three ended with their jobs


def test_a_failing_job_is_logged_and_its_runner_serves_the_next(runners, caplog):
    ran_in: list[greenlet.greenlet] = []

    def fails() -> None:
        ran_in.append(greenlet.getcurrent())
        raise ValueError("boom")

    with caplog.at_level(logging.ERROR, logger="app.runners"):
        run_and_wait(runners, fails)
    run_and_wait(runners, lambda: ran_in.append(greenlet.getcurrent()))
    assert "boom" in caplog.text and ran_in[0] is ran_in[1]


def test_a_parked_runner_woken_by_something_else_retires_without_harming_the_loop(runners, caplog):
    run_and_wait(runners, lambda: None)
    [parked] = runners.idle
    with caplog.at_level(logging.ERROR, logger="app.runners"):
        in_loop(lambda: parked.throw(gevent.Timeout(1)))  # a stray timeout
    assert runners.idle == [] and parked.dead
    done: list[int] = []
    run_and_wait(runners, done.append, 1)
    assert done == [1]


def test_a_parked_runner_killed_is_never_handed_a_job(runners):
    run_and_wait(runners, lambda: None)
    [parked] = runners.idle
    in_loop(lambda: parked.throw(greenlet.GreenletExit()))
    assert parked.dead and runners.idle == []
    done: list[int] = []
    run_and_wait(runners, done.append, 1)
    assert done == [1]
