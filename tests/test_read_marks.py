"""Batched `read`s (app/read_marks.py) over a real database: many users' markers moved and
counted by one statement, each answered with its own read state."""

from __future__ import annotations

from contextlib import contextmanager

import gevent
import pytest

from app import db, runtime
from app.errors import Unavailable
from app.read_marks import ReadMarks
from app.read_state import ReadState
from tests.support.clients import join
from tests.support.databases import sql
from tests.support.identities import unique
from tests.support.servers import Server

ALICE, BOB, CAROL, DAVE = (1, "Alice"), (2, "bob"), (3, "carol"), (4, "dave")


@pytest.fixture
def marks(fresh_database):
    """(ReadMarks, url, ids): alice, bob and dave in 'lobby' (dave has read up to ids["m1"]),
    carol not; `ids` of the lobby's messages m1..m4 and of alice and bob's DMs d1..d3."""
    db.make_cooperative()
    url = fresh_database()
    sql(url, "INSERT INTO rooms (name) VALUES ('lobby')")
    ids = {
        "m1": message(url, BOB[0], "hi", room="lobby"),
        "m2": message(url, BOB[0], "@alice look", room="lobby", mentions=["alice"]),
        "m3": message(url, ALICE[0], "mine", room="lobby"),
        "m4": message(url, BOB[0], "@room all", room="lobby", mentions=["room"]),
        "d1": message(url, BOB[0], "@alice hi", to_user=ALICE[0], mentions=["alice"]),
        "d2": message(url, BOB[0], "there?", to_user=ALICE[0]),
        "d3": message(url, ALICE[0], "yes", to_user=BOB[0]),
    }
    sql(url, "INSERT INTO chat_members (room, user_id) VALUES ('lobby', 1), ('lobby', 2)")
    sql(url, "INSERT INTO chat_members (room, user_id, last_read_id) VALUES ('lobby', 4, %s)", (ids["m1"],))
    pool = db.Pool(url, size=2, setup=runtime.prepare_pool_statements)
    yield ReadMarks(pool), url, ids
    pool.close()


def message(url: str, from_user: int, content: str, room=None, to_user=None, mentions=None) -> int:
    """Store a message as if sent; its id."""
    query = (
        "INSERT INTO messages (from_user, room, to_user, content, mentions) VALUES (%s, %s, %s, %s, %s) RETURNING id"
    )
    return sql(url, query, (from_user, room, to_user, content, mentions))[0][0]


def mark_at_once(reads: ReadMarks, asked: list[tuple]) -> list:
    """Each read's answer (or what it raised), all queued before any is read."""
    greenlets = [gevent.spawn(reads.mark, *args) for args in asked]
    gevent.joinall(greenlets)
    return [g.value if g.successful() else g.exception for g in greenlets]


def counting_batches(reads: ReadMarks) -> list[int]:
    """From now on the size of every batch `reads` sends goes into the returned list."""
    sizes: list[int] = []
    mark = reads.answer_batch

    def counted(batch):
        sizes.append(len(batch))
        return mark(batch)

    reads.answer_batch = counted
    return sizes


def test_the_reads_of_many_users_are_answered_by_one_batch_each_with_its_own_state(marks):
    """Rooms and conversations alike: markers clamped to the newest message and never moved
    back, counts from the marker after (others' messages, mentions of the reader's own name
    in any case or @room), a non-member told apart, the others unaffected."""
    reads, url, ids = marks
    batches = counting_batches(reads)
    answers = mark_at_once(
        reads,
        [
            (*ALICE, "lobby", None, ids["m1"]),
            (*BOB, "lobby", None, 10**12),  # past the newest: the newest
            (*CAROL, "lobby", None, ids["m4"]),  # not a member
            (*DAVE, "lobby", None, 0),  # behind his marker: it stays
            (*ALICE, None, BOB[0], ids["d1"]),
            (*BOB, None, ALICE[0], 10**12),  # past the conversation's newest: d3
        ],
    )
    assert batches == [6]
    assert answers == [
        # unread m2 and m4 (m3 is her own), both mentioning her
        ReadState(ids["m1"], 2, 2, ids["m4"]),
        ReadState(ids["m4"], 0, 0, ids["m4"]),
        None,
        # m2 mentions alice, not him
        ReadState(ids["m1"], 3, 1, ids["m4"]),
        # d2 unread; counted up to bob's newest to her
        ReadState(ids["d1"], 1, 0, ids["d2"]),
        ReadState(ids["d3"], 0, 0, ids["d3"]),
    ]
    members = "SELECT user_id, last_read_id FROM chat_members WHERE room = 'lobby' ORDER BY 1"
    assert sql(url, members) == [(1, ids["m1"]), (2, ids["m4"]), (4, ids["m1"])]
    assert sql(url, "SELECT * FROM dm_reads ORDER BY 1") == [(1, 2, ids["d1"]), (2, 1, ids["d3"])]


def test_two_reads_of_one_marker_in_a_batch_are_both_answered_with_the_greater(marks):
    """Whichever comes first in the batch (the lesser in the room, the greater in the
    conversation): each answer tells the marker as it stands after both."""
    reads, url, ids = marks
    batches = counting_batches(reads)
    answers = mark_at_once(
        reads,
        [
            (*ALICE, "lobby", None, ids["m1"]),
            (*ALICE, None, BOB[0], ids["d2"]),
            (*ALICE, "lobby", None, ids["m2"]),
            (*ALICE, None, BOB[0], ids["d1"]),
        ],
    )
    assert batches == [4]
    in_room, in_conversation = ReadState(ids["m2"], 1, 1, ids["m4"]), ReadState(ids["d2"], 0, 0, ids["d2"])
    assert answers == [in_room, in_conversation, in_room, in_conversation]
    assert sql(url, "SELECT last_read_id FROM chat_members WHERE room = 'lobby' AND user_id = 1") == [(ids["m2"],)]
    assert sql(url, "SELECT last_read_id FROM dm_reads WHERE user_id = 1") == [(ids["d2"],)]


def test_a_failed_batch_fails_each_of_its_reads_and_the_next_batch_is_read(marks, monkeypatch):
    reads, _, ids = marks
    autocommit = reads.pool.autocommit

    @contextmanager
    def away():
        raise Unavailable("database is away")
        yield

    monkeypatch.setattr(reads.pool, "autocommit", away)
    answers = mark_at_once(reads, [(*ALICE, "lobby", None, ids["m1"]), (*BOB, None, ALICE[0], ids["d3"])])
    assert [type(answer) for answer in answers] == [Unavailable, Unavailable]
    monkeypatch.setattr(reads.pool, "autocommit", autocommit)
    assert reads.mark(*ALICE, "lobby", None, ids["m1"]) == ReadState(ids["m1"], 2, 2, ids["m4"])


def test_reads_sent_at_once_by_many_users_are_each_answered_with_their_own_marker(server: Server, connect):
    """Over real connections, where the reads of a crowd share batches: no user is told
    another's marker or counts."""
    room = unique("crowd")
    sender = connect()
    join(sender, room)
    readers = [connect() for _ in range(5)]
    for reader in readers:
        join(reader, room)  # (before the messages: a join marks what is there read)
    ids = []
    for n in range(6):
        sender.send({"type": "message", "room": room, "content": f"m{n}"})
        ids.append(sender.expect("message", room=room, content=f"m{n}")["data"]["id"])
    for n, reader in enumerate(readers):
        reader.send({"type": "read", "room": room, "id": ids[n]})
    for n, reader in enumerate(readers):
        data = {"lastReadId": ids[n], "unread": len(ids) - n - 1, "mentions": 0, "countedUpTo": ids[-1]}
        assert reader.expect("read", room=room)["data"] == data
