"""The two statements of a batch of events (app/event_store.py): the messages read with
what deciding each request needs, and the decided events stored only on the row versions
they were decided on, numbered, applied and announced; on a real database."""

from __future__ import annotations

import select
import threading
from collections.abc import Iterator

import orjson
import psycopg2
import pytest

from app import bus, db, event_store, runtime
from tests.support.databases import sql
from tests.support.identities import new_user_id, unique
from tests.support.waiting import wait_for

THUMBS = "\N{THUMBS UP SIGN}"
APPLE = "\N{RED APPLE}"


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


def room_message(url: str, room: str, author: int, private: bool = False, seq: int = 1) -> int:
    """A message of `author` in `room` (made if new, its last_seq at the message's); returns its id."""
    sql(
        url,
        """INSERT INTO rooms (name, is_private, last_seq) VALUES (%s, %s, %s)
           ON CONFLICT (name) DO UPDATE SET last_seq = EXCLUDED.last_seq""",
        (room, private, seq),
    )
    return sql(
        url,
        "INSERT INTO messages (from_user, room, content, seq) VALUES (%s, %s, 'hi', %s) RETURNING id",
        (author, room, seq),
    )[0][0]


def read(conn, message_id: int, user_id: int, emoji: str | None = None) -> event_store.Read | None:
    with conn.cursor() as cur:
        return event_store.read_messages(cur, [(message_id, user_id, emoji)])[0]


def checks(conn, message_id: int, user_id: int, emoji: str | None = None) -> tuple | None:
    """(hidden, owner, reacted) as the user's event about the message reads them."""
    found = read(conn, message_id, user_id, emoji)
    return None if found is None else (found.hidden, found.owner, found.reacted)


def decided(found: event_store.Read, kind: str, user_id: int, emoji: str | None = None, content: str | None = None):
    return event_store.Decided(kind, found, user_id, f"u{user_id}", emoji, content)


def store(conn, events: list[event_store.Decided], channel: str | None = None) -> dict:
    with conn.cursor() as cur:
        return event_store.store_events(cur, events, channel, "origin-test")


def reactions(url: str, message_id: int) -> list | None:
    """The message row's summary of its reactions, in its order: (emoji, user ids)."""
    summary = sql(url, "SELECT reactions FROM messages WHERE id = %s", (message_id,))[0][0]
    return None if summary is None else list(summary.items())


def test_the_message_comes_with_whether_the_user_may_see_it_and_owns_its_room(database_url, connect):
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


def test_a_message_whose_room_is_gone_is_hidden(database_url, connect):
    room = unique("gone")
    message_id = room_message(database_url, room, new_user_id())
    sql(database_url, "DELETE FROM rooms WHERE name = %s", (room,))
    assert checks(connect(), message_id, new_user_id()) == (True, False, False)


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
    assert checks(conn, message_id, reactor, APPLE) == (False, False, False)
    assert checks(conn, message_id, other, THUMBS) == (False, False, False)
    assert checks(conn, message_id, reactor) == (False, False, False)  # an edit or delete: no emoji


def test_many_requests_are_read_in_one_statement_each_in_its_place(database_url, connect):
    author, reactor = new_user_id(), new_user_id()
    first = room_message(database_url, unique("room"), author)
    second = room_message(database_url, unique("room"), author)
    sql(
        database_url,
        "INSERT INTO message_reactions (message_id, user_id, emoji, event_id) VALUES (%s, %s, %s, 1)",
        (second, reactor, APPLE),
    )
    with connect().cursor() as cur:
        found = event_store.read_messages(
            cur, [(second, reactor, APPLE), (10**12, reactor, None), (first, reactor, APPLE), (second, author, APPLE)]
        )
    assert [f and (f.message.id, f.reacted) for f in found] == [(second, True), None, (first, False), (second, False)]


def test_events_of_one_room_are_numbered_in_request_order_with_ids_in_seq_order(database_url, connect):
    author, reactor = new_user_id(), new_user_id()
    room = unique("room")
    edited = room_message(database_url, room, author, seq=1)
    reacted = room_message(database_url, room, author, seq=2)
    conn = connect()
    placed = store(
        conn,
        [
            decided(read(conn, edited, author), "edit", author, content="fixed @someone"),
            decided(read(conn, reacted, reactor, THUMBS), "react", reactor, THUMBS),
        ],
    )
    (edit_id, edit_seq), (react_id, react_seq) = (placed[0].id, placed[0].seq), (placed[1].id, placed[1].seq)
    assert (edit_seq, react_seq) == (3, 4)
    assert edit_id < react_id
    assert sql(database_url, "SELECT last_seq FROM rooms WHERE name = %s", (room,)) == [(4,)]
    assert sql(
        database_url, "SELECT content, mentions, edited_at IS NOT NULL FROM messages WHERE id = %s", (edited,)
    ) == [("fixed @someone", ["someone"], True)]
    assert reactions(database_url, reacted) == [(THUMBS, [reactor])]
    assert sql(database_url, "SELECT id, seq, kind FROM message_events WHERE room = %s ORDER BY id", (room,)) == [
        (edit_id, 3, "edit"),
        (react_id, 4, "react"),
    ]


def test_the_reaction_summary_keeps_first_come_emoji_first_and_drops_what_is_taken_back(database_url, connect):
    author, early, late = new_user_id(), new_user_id(), new_user_id()
    message_id = room_message(database_url, unique("room"), author)
    conn = connect()
    for user_id, emoji, kind in [
        (early, APPLE, "react"),
        (late, THUMBS, "react"),
        (late, APPLE, "react"),
        (early, APPLE, "unreact"),
    ]:
        assert len(store(conn, [decided(read(conn, message_id, user_id, emoji), kind, user_id, emoji)])) == 1
    assert reactions(database_url, message_id) == [(THUMBS, [late]), (APPLE, [late])]
    store(conn, [decided(read(conn, message_id, late, APPLE), "unreact", late, APPLE)])
    store(conn, [decided(read(conn, message_id, late, THUMBS), "unreact", late, THUMBS)])
    assert reactions(database_url, message_id) is None


def test_a_delete_erases_the_content_its_edits_and_its_reactions(database_url, connect):
    author, reactor = new_user_id(), new_user_id()
    message_id = room_message(database_url, unique("room"), author)
    conn = connect()
    store(conn, [decided(read(conn, message_id, author), "edit", author, content="secret words")])
    store(conn, [decided(read(conn, message_id, reactor, THUMBS), "react", reactor, THUMBS)])
    store(conn, [decided(read(conn, message_id, author), "delete", author)])
    assert sql(
        database_url, "SELECT content, deleted, reactions, mentions FROM messages WHERE id = %s", (message_id,)
    ) == [("", True, None, None)]
    assert sql(database_url, "SELECT count(*) FROM message_reactions WHERE message_id = %s", (message_id,)) == [(0,)]
    assert sql(
        database_url, "SELECT kind, content FROM message_events WHERE message_id = %s ORDER BY id", (message_id,)
    ) == [("edit", None), ("react", None), ("delete", None)]


def test_an_event_decided_on_a_message_changed_since_is_not_stored(database_url, connect):
    author = new_user_id()
    room = unique("room")
    message_id = room_message(database_url, room, author)
    conn = connect()
    stale = read(conn, message_id, author)
    store(conn, [decided(read(conn, message_id, author), "edit", author, content="first")])
    assert store(conn, [decided(stale, "edit", author, content="second")]) == {}
    assert sql(database_url, "SELECT content FROM messages WHERE id = %s", (message_id,)) == [("first",)]
    assert sql(database_url, "SELECT last_seq FROM rooms WHERE name = %s", (room,)) == [(2,)]


def test_a_store_waiting_for_a_message_sees_what_its_holder_committed(database_url, connect):
    """Two reacts of one user and emoji decided at once: the second, let through when the
    first commits, must find its message changed (and be decided again), not store the
    reaction twice."""
    user_id = new_user_id()
    message_id = room_message(database_url, unique("room"), new_user_id())
    holder, waiter = connect(), connect()
    first = read(holder, message_id, user_id, THUMBS)
    outcome: list = []
    with holder.cursor() as cur:
        cur.execute("BEGIN; SELECT 1 FROM messages WHERE id = %s FOR UPDATE", (message_id,))

        def react_too() -> None:
            outcome.append(store(waiter, [decided(first, "react", user_id, THUMBS)]))

        thread = threading.Thread(target=react_too)
        thread.start()
        wait_for(
            lambda: sql(
                database_url,
                "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
                (waiter.get_backend_pid(),),
            ),
            5,
            "the second store waiting for the message's lock",
        )
        cur.execute(
            """INSERT INTO message_reactions (message_id, user_id, emoji, event_id) VALUES (%s, %s, %s, 1);
               UPDATE messages SET reactions = '{}' WHERE id = %s; COMMIT""",
            (message_id, user_id, THUMBS, message_id),
        )
    thread.join(10)
    assert outcome == [{}]
    assert sql(database_url, "SELECT count(*) FROM message_reactions WHERE message_id = %s", (message_id,)) == [(1,)]


def test_an_event_of_a_room_removed_since_is_not_stored(database_url, connect):
    room = unique("room")
    author = new_user_id()
    message_id = room_message(database_url, room, author)
    conn = connect()
    found = read(conn, message_id, author)
    sql(database_url, "DELETE FROM rooms WHERE name = %s", (room,))
    assert store(conn, [decided(found, "edit", author, content="late")]) == {}
    assert sql(database_url, "SELECT count(*) FROM message_events WHERE message_id = %s", (message_id,)) == [(0,)]


def test_a_dm_event_is_numbered_in_its_conversation_and_becomes_its_newest_entry(database_url, connect):
    low, high = sorted((new_user_id(), new_user_id()))
    message_id = sql(
        database_url,
        """INSERT INTO dm_threads (user_low, user_high, last_seq) VALUES (%s, %s, 1);
           INSERT INTO messages (from_user, to_user, content, seq) VALUES (%s, %s, 'hi', 1) RETURNING id""",
        (low, high, low, high),
    )[0][0]
    conn = connect()
    placed = store(conn, [decided(read(conn, message_id, high, THUMBS), "react", high, THUMBS)])
    event_id, seq = placed[0].id, placed[0].seq
    assert seq == 2
    assert sql(
        database_url, "SELECT last_seq, last_id FROM dm_threads WHERE user_low = %s AND user_high = %s", (low, high)
    ) == [(2, event_id)]


@pytest.mark.parametrize("kind", ["edit", "react", "delete"])
def test_the_announcement_is_the_payload_the_bus_reads(database_url, connect, kind):
    """The NOTIFY payload, assembled in SQL, says what app/bus.py's stored_event_payload
    says of the event built from the statement's answer."""
    author = new_user_id()
    room = unique("room")
    message_id = room_message(database_url, room, author)
    channel = unique("chat_test").replace("-", "_")
    listener = psycopg2.connect(database_url)
    listener.autocommit = True
    try:
        listener.cursor().execute(f"LISTEN {channel}")
        conn = connect()
        found = read(conn, message_id, author, THUMBS)
        event = decided(
            found, kind, author, THUMBS if kind == "react" else None, "new text" if kind == "edit" else None
        )
        stored = store(conn, [event], channel)[0]
        select.select([listener], [], [], 5)
        listener.poll()
        (notice,) = listener.notifies
    finally:
        listener.close()
    origin, _, body = notice.payload.partition("|")
    assert origin == "origin-test"
    assert orjson.loads(body) == orjson.loads(bus.stored_event_payload("o", stored).partition("|")[2])
    # and the event is the one make_event builds from the statement's answer
    at = stored.data.get("editedAt", "")
    made = event_store.make_event(
        stored.id, stored.seq, kind, ("r", room), found.message, author, f"u{author}", event.emoji, event.content, at
    )
    assert (stored.id, stored.seq, stored.kind, stored.channel, stored.data) == (
        made.id,
        made.seq,
        made.kind,
        made.channel,
        made.data,
    )


def test_an_announcement_too_large_for_a_notify_names_the_event(database_url, connect):
    author = new_user_id()
    message_id = room_message(database_url, unique("room"), author)
    listener = psycopg2.connect(database_url)
    listener.autocommit = True
    try:
        listener.cursor().execute("LISTEN chat_test_large")
        conn = connect()
        event_id = store(
            conn, [decided(read(conn, message_id, author), "edit", author, content="x" * 8000)], "chat_test_large"
        )[0].id
        select.select([listener], [], [], 5)
        listener.poll()
        (notice,) = listener.notifies
    finally:
        listener.close()
    assert orjson.loads(notice.payload.partition("|")[2]) == {"k": "eref", "id": event_id}
