"""The group commit in this process, over a real database: what a sender is told when
the database stalls or fails half-way, and that nothing is stored twice meanwhile."""

from __future__ import annotations

import time

import gevent
import psycopg2
import pytest

from app import batcher as batcher_module
from app import db, store
from app.batcher import Batcher
from app.commits_in_flight import CommitsInFlight
from app.errors import Unavailable
from tests.support.databases import sql

ROOM = "stalled"


@pytest.fixture
def stalled_room(fresh_database):
    """(url, lock): `lock()` holds the room's row lock in a transaction of its own, as a
    long statement or a stalled database would, until `release()`."""
    db.make_cooperative()
    url = fresh_database()
    sql(url, "INSERT INTO rooms (name) VALUES (%s)", (ROOM,))
    sql(url, "INSERT INTO users (id, username) VALUES (1, 'one')")
    holder = psycopg2.connect(url)

    class Lock:
        def hold(self) -> None:
            with holder.cursor() as cur:
                cur.execute("SELECT 1 FROM rooms WHERE name = %s FOR UPDATE", (ROOM,))

        def release(self) -> None:
            holder.rollback()

    yield url, Lock()
    holder.close()


def make_batcher(pool: db.Pool, delivered: list, timeout_seconds: float) -> Batcher:
    batcher = Batcher(
        pool,
        origin="test",
        notify_channel=lambda: None,
        on_committed=delivered.extend,
        max_batch=256,
        timeout_seconds=timeout_seconds,
        pipelines=1,
    )
    batcher.known_users.add(1)
    return batcher


def draft(content: str, client_id: str | None = None) -> store.Draft:
    return store.Draft(from_user=1, username="one", content=content, room=ROOM, client_id=client_id)


def stored_contents(url: str) -> list[str]:
    return [row[0] for row in sql(url, "SELECT content FROM messages ORDER BY id")]


def test_a_draft_whose_sender_gave_up_before_it_was_sent_is_not_stored(stalled_room):
    url, lock = stalled_room
    pool = db.Pool(url, size=2)
    batcher = make_batcher(pool, [], timeout_seconds=5)
    try:
        batcher.submit(draft("connects the lane"), None)  # (statement timeout: 5 s)
        batcher.timeout_seconds = 0.5  # the senders' wait, from now on
        lock.hold()
        in_flight = gevent.spawn(batcher.submit, draft("in flight"), None)
        gevent.sleep(0.1)  # its batch now waits for the room's lock
        with pytest.raises(Unavailable, match="nothing was stored"):
            batcher.submit(draft("queued behind it"), None)  # told: not stored, retry
        assert not in_flight.ready()  # its batch is being committed: it waits for the outcome
        lock.release()
        assert in_flight.get(timeout=5).message.data["content"] == "in flight"
        gevent.sleep(0.3)  # the lane's next turn
        # The first was being committed, and its sender got it; the second was withdrawn.
        assert stored_contents(url) == ["connects the lane", "in flight"]
    finally:
        lock.release()
        pool.close()


def test_a_sender_whose_batch_outlasts_its_deadline_is_told_it_may_yet_be_stored(stalled_room, monkeypatch):
    monkeypatch.setattr(batcher_module, "UNKNOWN_OUTCOME_GRACE_SECONDS", 0.2)
    url, lock = stalled_room
    pool = db.Pool(url, size=2)
    delivered: list = []
    batcher = make_batcher(pool, delivered, timeout_seconds=5)
    try:
        batcher.submit(draft("connects the lane"), None)  # (statement timeout: 5 s)
        batcher.timeout_seconds = 0.3  # the sender's deadline, from now on: 0.3 x 2 + 0.2 s
        lock.hold()
        started = time.monotonic()
        with pytest.raises(Unavailable, match="may yet be stored"):
            batcher.submit(draft("in flight"), None)  # its batch waits for the room's lock
        assert time.monotonic() - started >= 0.8, "told before its deadline"
        lock.release()
        # Its batch goes on and commits: stored and delivered, as the sender was told it might be.
        gevent.sleep(0.5)
        assert stored_contents(url) == ["connects the lane", "in flight"]
        assert [m.data["content"] for m in delivered] == ["connects the lane", "in flight"]
        # Nobody waits any more: the deadlines' sweep has ended.
        gevent.sleep(0.3)
        assert batcher.sweeper is None
    finally:
        lock.release()
        pool.close()


def test_a_sweep_that_fails_once_does_not_leave_a_sender_waiting_for_good(stalled_room, monkeypatch):
    url, lock = stalled_room
    pool = db.Pool(url, size=2)
    batcher = make_batcher(pool, [], timeout_seconds=5)
    failures = []
    expire = batcher._expire_waits

    def failing_once_armed(now: float) -> bool:
        if failures == ["armed"]:
            failures.append("failed")
            raise RuntimeError("a sweep that fails")
        return expire(now)

    monkeypatch.setattr(batcher, "_expire_waits", failing_once_armed)
    try:
        batcher.submit(draft("connects the lane"), None)
        batcher.timeout_seconds = 0.3
        lock.hold()
        in_flight = gevent.spawn(batcher.submit, draft("in flight"), None)
        gevent.sleep(0.1)  # its batch now waits for the room's lock; the sweep runs meanwhile
        failures.append("armed")  # the next sweep fails, while both senders wait
        with gevent.Timeout(5, AssertionError("the sender was never answered")):
            with pytest.raises(Unavailable, match="nothing was stored"):
                batcher.submit(draft("queued behind it"), None)
        assert failures == ["armed", "failed"]
    finally:
        lock.release()
        in_flight.join(timeout=5)
        pool.close()


@pytest.mark.slow
def test_a_committed_batch_is_delivered_and_answered_when_looking_up_a_resend_fails(stalled_room):
    url, lock = stalled_room
    pool = db.Pool(url, size=1, acquire_timeout=2)
    delivered: list = []
    batcher = make_batcher(pool, delivered, timeout_seconds=5)
    try:
        earlier = batcher.submit(draft("stored before", client_id="c1"), None).message
        lock.hold()
        first = gevent.spawn(batcher.submit, draft("first"), None)
        gevent.sleep(0.1)  # the lane waits for the lock: the next three share a batch
        answers = [gevent.spawn(batcher.submit, d, None) for d in (draft("a"), draft("again", "c1"), draft("b"))]
        gevent.sleep(0.1)
        fresh_a, resend, fresh_b = answers
        with pool.connection():  # the pool is busy: the resend's lookup cannot get one
            lock.release()
            first.join(timeout=5)
            fresh_a.join(timeout=5)
            assert not resend.ready(), "the new messages' senders waited for the resend's lookup"
            gevent.joinall(answers, timeout=5)
        assert fresh_a.value.message.data["content"] == "a" and not fresh_a.value.duplicate
        assert fresh_b.value.message.data["content"] == "b"
        assert isinstance(resend.exception, Unavailable)
        assert [m.data["content"] for m in delivered] == ["stored before", "first", "a", "b"]
        assert stored_contents(url) == ["stored before", "first", "a", "b"]
        # Sent again once the pool is free, the resend is answered with what it stored.
        again = batcher.submit(draft("again", "c1"), None)
        assert again.duplicate and again.message.id == earlier.id
    finally:
        lock.release()
        pool.close()


def test_a_dms_commit_is_reported_in_flight_until_it_is_delivered(fresh_database):
    """A gap fill waits for it (app/commits_in_flight.py): from before the statement is
    sent until the delivery is done, and no longer."""
    db.make_cooperative()
    url = fresh_database()
    sql(url, "INSERT INTO users (id, username) VALUES (1, 'one'), (2, 'two')")
    sql(url, "INSERT INTO rooms (name) VALUES ('r')")
    pool = db.Pool(url, size=2)
    commits = CommitsInFlight()
    in_flight_while_delivered: list[bool] = []
    conversation = ("d", 1, 2)

    def delivered(messages: list) -> None:
        in_flight_while_delivered.append(not commits.wait(conversation, timeout_seconds=0))

    batcher = Batcher(pool, "test", lambda: None, delivered, 256, 5, pipelines=1, local_commits=commits)
    batcher.known_users.update({1, 2})
    try:
        batcher.submit(store.Draft(from_user=1, username="one", content="hi", to_user=2), None)
        assert in_flight_while_delivered == [True]
        assert commits.wait(conversation, timeout_seconds=0)  # over once answered
        batcher.submit(store.Draft(from_user=1, username="one", content="in a room", room="r"), None)
        assert in_flight_while_delivered == [True, False]  # a room's is not waited for
    finally:
        pool.close()


def test_a_job_runs_in_its_lane_between_batches_and_is_delivered_before_the_next_one(stalled_room):
    """Batcher.run_in_lane (the store of events): given while a batch waits for the room's
    lock, a job runs after that batch and before the next, and what its committed step
    delivers comes between the two batches' messages, in commit order. A job that fails
    gets its error, and the lane goes on."""
    url, lock = stalled_room
    pool = db.Pool(url, size=2)
    delivered: list = []
    batcher = make_batcher(pool, delivered, timeout_seconds=5)
    channel = ("r", ROOM)

    def describe(cur) -> str:
        cur.execute("UPDATE rooms SET description = 'by the job' WHERE name = %s RETURNING description", (ROOM,))
        return cur.fetchone()[0]

    def deliver(description: str) -> str:
        delivered.append(description)
        return "answered"

    try:
        lock.hold()
        first = gevent.spawn(batcher.submit, draft("first"), None)
        gevent.sleep(0.2)  # its batch waits for the lock
        job = batcher.run_in_lane(channel, describe, deliver)
        failing = batcher.run_in_lane(channel, lambda cur: cur.execute("SELECT 1 / 0"), deliver)
        second = gevent.spawn(batcher.submit, draft("second"), None)
        gevent.sleep(0.2)
        assert not job.ready()
        lock.release()
        assert job.get(timeout=5) == "answered"
        with pytest.raises(psycopg2.errors.DivisionByZero):
            failing.get(timeout=5)
        gevent.joinall([first, second], timeout=5, raise_error=True)
        assert [item if isinstance(item, str) else item.data["content"] for item in delivered] == [
            "first",
            "by the job",
            "second",
        ]
        assert sql(url, "SELECT description FROM rooms WHERE name = %s", (ROOM,)) == [("by the job",)]
    finally:
        pool.close()
