"""SharedRead: one read for a crowd asking at once, again only once it is old."""

from __future__ import annotations

import gevent
import pytest

from app.shared_read import SharedRead


def test_a_crowd_asking_at_once_costs_one_read():
    reads: list[int] = []

    def read() -> int:
        reads.append(1)
        gevent.sleep(0.01)  # a round trip: the others ask meanwhile
        return len(reads)

    shared = SharedRead(read, max_age_seconds=60)
    asking = [gevent.spawn(shared.get) for _ in range(50)]
    gevent.joinall(asking, timeout=5)
    assert [g.value for g in asking] == [1] * 50
    assert shared.get() == 1 and len(reads) == 1


def test_it_is_read_again_once_old():
    values = iter([1, 2])
    shared = SharedRead(lambda: next(values), max_age_seconds=0)
    assert shared.get() == 1
    assert shared.get() == 2


def test_a_failed_read_fails_its_waiters_and_the_next_call_reads_again():
    calls: list[int] = []

    def read() -> str:
        calls.append(1)
        gevent.sleep(0.01)
        if len(calls) == 1:
            raise RuntimeError("database away")
        return "back"

    shared = SharedRead(read, max_age_seconds=60)
    first, waiter = gevent.spawn(shared.get), gevent.spawn(shared.get)
    gevent.joinall([first, waiter], timeout=5)
    for greenlet in (first, waiter):
        with pytest.raises(RuntimeError):
            greenlet.get()
    assert shared.get() == "back"


def test_refresh_reads_again_after_a_read_already_running():
    """A read running when the caller learns of a change may have taken its snapshot
    before it: refresh() waits for it, then reads again."""
    reads: list[int] = []

    def read() -> int:
        reads.append(1)
        gevent.sleep(0.01)
        return len(reads)

    shared = SharedRead(read, max_age_seconds=60)
    running = gevent.spawn(shared.get)
    gevent.sleep(0)  # its read has started
    assert shared.refresh() == 2
    assert running.get(timeout=5) == 1 and shared.get() == 2


def test_would_read_is_true_only_when_get_would_start_a_read():
    """What a prefetch asks before starting one (OnlineLists.prefetch)."""
    shared = SharedRead(lambda: gevent.sleep(0.01) or "read", max_age_seconds=60)
    assert shared.would_read()  # nothing read yet
    reading = gevent.spawn(shared.get)
    gevent.sleep(0)  # the read has started
    assert not shared.would_read()  # a get now waits for it
    reading.join(timeout=5)
    assert reading.value == "read" and not shared.would_read()  # fresh
    shared.max_age_seconds = 0
    assert shared.would_read()  # old
