"""A stretch that promised not to yield fails loudly when it does."""

from __future__ import annotations

import gevent
import pytest

from app.noyield import Yielded, not_yielding


def test_a_stretch_that_runs_through_passes():
    ran = []
    with not_yielding("a plain stretch"):
        ran.append(1)
    assert ran == [1]


def test_a_stretch_that_lets_another_greenlet_run_raises_naming_itself():
    other = gevent.spawn(lambda: None)
    with pytest.raises(Yielded, match="the listing"):
        with not_yielding("the listing"):
            gevent.sleep(0)  # what a database round trip does
    assert other.dead


def test_the_tracer_before_the_stretch_is_back_after_it_and_saw_the_switches():
    import greenlet

    seen = []
    greenlet.settrace(lambda event, args: seen.append(event))
    try:
        with pytest.raises(Yielded):
            with not_yielding("a stretch"):
                gevent.sleep(0)
        assert seen  # chained: the outer tracer still heard the switches
        assert greenlet.gettrace() is not None
    finally:
        greenlet.settrace(None)
