"""Jobs run in kept greenlets (app/runners.py): reused, concurrent when they wait, bounded."""

from __future__ import annotations

import logging

import gevent
import greenlet
import pytest
from gevent.event import Event

from app.runners import Runners


@pytest.fixture
def runners() -> Runners:
    return Runners(gevent.get_hub(), idle_max=2)


def test_jobs_one_after_another_run_in_the_same_greenlet(runners):
    ran_in: list[greenlet.greenlet] = []
    for _ in range(3):
        runners.run_soon(lambda: ran_in.append(greenlet.getcurrent()))
        gevent.sleep(0)
    assert len(ran_in) == 3 and len(set(ran_in)) == 1
    assert ran_in[0] is not greenlet.getcurrent()


def test_jobs_that_wait_run_side_by_side_and_the_runners_beyond_the_cap_end(runners):
    release = Event()
    done: list[int] = []

    def waits(n: int) -> None:
        release.wait()
        done.append(n)

    for n in range(5):
        runners.run_soon(waits, n)
    gevent.sleep(0)
    assert done == [] and runners.idle == []  # all five wait, each in its own runner
    release.set()
    gevent.sleep(0.01)
    assert sorted(done) == [0, 1, 2, 3, 4]
    assert len(runners.idle) == 2  # three ended with their jobs


def test_a_failing_job_is_logged_and_its_runner_serves_the_next(runners, caplog):
    ran_in: list[greenlet.greenlet] = []

    def fails() -> None:
        ran_in.append(greenlet.getcurrent())
        raise ValueError("boom")

    with caplog.at_level(logging.ERROR, logger="app.runners"):
        runners.run_soon(fails)
        gevent.sleep(0)
    runners.run_soon(lambda: ran_in.append(greenlet.getcurrent()))
    gevent.sleep(0)
    assert "boom" in caplog.text and ran_in[0] is ran_in[1]


def test_a_parked_runner_woken_by_something_else_retires_without_harming_the_loop(runners, caplog):
    runners.run_soon(lambda: None)
    gevent.sleep(0)
    [parked] = runners.idle
    with caplog.at_level(logging.ERROR, logger="app.runners"):
        gevent.get_hub().loop.run_callback(parked.throw, gevent.Timeout(1))  # a stray timeout
        gevent.sleep(0)
    assert runners.idle == [] and parked.dead
    done = []
    runners.run_soon(done.append, 1)
    gevent.sleep(0)
    assert done == [1]


def test_a_parked_runner_killed_is_never_handed_a_job(runners):
    runners.run_soon(lambda: None)
    gevent.sleep(0)
    [parked] = runners.idle
    gevent.get_hub().loop.run_callback(parked.throw, greenlet.GreenletExit())
    gevent.sleep(0)
    assert parked.dead and runners.idle == []
    done = []
    runners.run_soon(done.append, 1)
    gevent.sleep(0)
    assert done == [1]
