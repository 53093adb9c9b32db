"""The statement that opens an event's transaction (app/event_store.py begin_and_lock):
the locked message and the checks read with it, on a real database."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg2.errors
import psycopg2.extensions
import pytest

from app import db, event_store, runtime
from tests.support.databases import sql
from tests.support.identities import new_user_id, unique
from tests.support.waiting import wait_for

TIMEOUT_MS = 5000
THUMBS = "\N{THUMBS UP SIGN}"


@pytest.fixture
def connect(database_url: str) -> Iterator:
    """Connections as the pool makes them (its statements prepared, planned as the pool's), closed after."""
    made = []

    def _connect():
        conn = db.connect(database_url, autocommit=True, setup=runtime.prepare_pool_statements)
        made.append(conn)
        return conn

    yield _connect
    for conn in made:
        conn.close()


def room_message(url: str, room: str, author: int, private: bool = False) -> int:
    """A message of `author` in a new room; returns its id."""
    sql(url, "INSERT INTO rooms (name, is_private) VALUES (%s, %s)", (room, private))
    return sql(
        url,
        "INSERT INTO messages (from_user, room, content, seq) VALUES (%s, %s, 'hi', 1) RETURNING id",
        (author, room),
    )[0][0]


def checks(conn, message_id: int, user_id: int, emoji: str | None = None) -> tuple | None:
    """(hidden, owner, reacted) as the user's event about the message reads them."""
    with conn.cursor() as cur:
        locked = event_store.begin_and_lock(cur, message_id, user_id, emoji, TIMEOUT_MS)
        cur.execute("ROLLBACK")
    return None if locked is None else (locked.hidden, locked.owner, locked.reacted)


def test_the_locked_message_comes_with_whether_the_user_may_see_it_and_owns_its_room(database_url, connect):
    owner, member, outsider = new_user_id(), new_user_id(), new_user_id()
    room = unique("secret")
    message_id = room_message(database_url, room, member, private=True)
    sql(
        database_url,
        "INSERT INTO chat_members (room, user_id, role) VALUES (%s, %s, 'owner'), (%s, %s, 'member')",
        (room, owner, room, member),
    )
    conn = connect()
    assert checks(conn, message_id, owner) == (False, True, False)
    assert checks(conn, message_id, member) == (False, False, False)
    assert checks(conn, message_id, outsider) == (True, False, False)
    assert checks(conn, message_id + 1_000_000, owner) is None
    assert conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE


def test_a_reaction_is_read_for_its_user_and_emoji_only(database_url, connect):
    reactor, other = new_user_id(), new_user_id()
    message_id = room_message(database_url, unique("room"), other)
    sql(
        database_url,
        "INSERT INTO message_reactions (message_id, user_id, emoji, event_id) VALUES (%s, %s, %s, 1)",
        (message_id, reactor, THUMBS),
    )
    conn = connect()
    assert checks(conn, message_id, reactor, THUMBS) == (False, False, True)
    assert checks(conn, message_id, reactor, "\N{RED APPLE}") == (False, False, False)
    assert checks(conn, message_id, other, THUMBS) == (False, False, False)
    assert checks(conn, message_id, reactor) == (False, False, False)  # an edit or delete: no emoji


def test_a_request_waiting_for_the_message_lock_reads_what_the_holder_committed(database_url, connect):
    """Two reacts of one user and emoji at once: the second, let through when the first
    commits, must see the reaction on (a resend), not the state from before its wait."""
    user_id = new_user_id()
    message_id = room_message(database_url, unique("room"), new_user_id())
    first, second = connect(), connect()
    outcome: list = []
    with first.cursor() as cur:
        assert event_store.begin_and_lock(cur, message_id, user_id, THUMBS, TIMEOUT_MS).reacted is False
        cur.execute(
            "INSERT INTO message_reactions (message_id, user_id, emoji, event_id) VALUES (%s, %s, %s, 1)",
            (message_id, user_id, THUMBS),
        )

        def react_again() -> None:
            with second.cursor() as cur2:
                outcome.append(event_store.begin_and_lock(cur2, message_id, user_id, THUMBS, TIMEOUT_MS))
                cur2.execute("ROLLBACK")

        waiter = threading.Thread(target=react_again)
        waiter.start()
        wait_for(
            lambda: sql(
                database_url,
                "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
                (second.get_backend_pid(),),
            ),
            5,
            "the second request waiting for the message's lock",
        )
        cur.execute("COMMIT")
    waiter.join(10)
    assert not waiter.is_alive()
    assert outcome[0].reacted is True


def test_a_request_waits_for_a_locked_message_no_longer_than_its_statement_timeout(database_url, connect):
    """The timeout set in the round trip that opens the transaction already bounds the
    lock's wait in that round trip (a stuck holder must not keep the sender waiting)."""
    message_id = room_message(database_url, unique("room"), new_user_id())
    holder, waiter = connect(), connect()
    with holder.cursor() as held, waiter.cursor() as cur:
        held.execute("BEGIN; SELECT 1 FROM messages WHERE id = %s FOR UPDATE", (message_id,))
        cur.execute("SET statement_timeout = '3s'")  # without the request's own: fail, not hang
        started = time.monotonic()
        with pytest.raises(psycopg2.errors.QueryCanceled):
            event_store.begin_and_lock(cur, message_id, new_user_id(), None, 200)
        assert time.monotonic() - started < 2
        cur.execute("ROLLBACK")
        held.execute("ROLLBACK")
