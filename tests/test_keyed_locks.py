"""KeyedLocks: one lock per key, gone once nobody holds or waits for it."""

import gevent
import pytest

from app.keyed_locks import KeyedLocks


def test_a_second_holder_of_a_key_waits_for_the_first():
    locks = KeyedLocks()
    order = []

    def second():
        with locks.hold(("general", 1)):
            order.append("second")

    with locks.hold(("general", 1)):
        waiter = gevent.spawn(second)
        gevent.sleep(0.01)
        order.append("first")
    waiter.join(timeout=1)
    assert order == ["first", "second"]


def test_holders_of_different_keys_do_not_wait_for_each_other():
    locks = KeyedLocks()
    with locks.hold(("general", 1)):
        other = gevent.spawn(lambda: locks.hold(("general", 2)).__enter__())
        other.join(timeout=1)
        assert other.successful()


def test_a_lock_is_dropped_after_its_last_holder():
    locks = KeyedLocks()
    with locks.hold("a"), locks.hold_all(["b", "c"]):
        assert len(locks) == 3
    assert len(locks) == 0


def test_a_waiter_killed_while_waiting_leaves_nothing_held_or_kept():
    locks = KeyedLocks()
    with locks.hold("a"):
        waiter = gevent.spawn(lambda: locks.hold("a").__enter__())
        gevent.sleep(0.01)
        waiter.kill()
    assert len(locks) == 0
    with gevent.Timeout(1):
        with locks.hold("a"):
            pass


def test_hold_all_takes_every_key_and_waits_for_each_held_one():
    locks = KeyedLocks()
    entered = []

    def take_all():
        with locks.hold_all(["a", "b", "c"]):
            entered.append(True)

    with locks.hold("b"):
        taker = gevent.spawn(take_all)
        gevent.sleep(0.01)
        assert entered == []
        assert len(locks) == 2  # "a" held by the taker, "b" waited for, "c" not reached yet
    taker.join(timeout=1)
    assert entered == [True]
    assert len(locks) == 0


def test_hold_all_interrupted_halfway_releases_what_it_took():
    locks = KeyedLocks()
    with locks.hold("b"):
        with pytest.raises(gevent.Timeout), gevent.Timeout(0.01):
            with locks.hold_all(["a", "b"]):
                pass  # never reached: "b" stays held
        assert len(locks) == 1  # only "b", ours
    with gevent.Timeout(1):
        with locks.hold_all(["a", "b"]):
            pass
    assert len(locks) == 0


def test_an_exception_inside_the_block_releases_every_key():
    locks = KeyedLocks()
    with pytest.raises(ValueError), locks.hold_all(["a", "b"]):
        raise ValueError("boom")
    assert len(locks) == 0
