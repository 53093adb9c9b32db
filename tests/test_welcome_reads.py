"""The `welcome` reads of many connecting users at once (app/welcome_reads.py), on a real database.

Each test answers one batch of several users directly, as a crowd connecting at once
would be answered, and checks that no user gets another's name, rooms or counts. (The
connect path itself, one user at a time, is covered over real connections by the tests
of welcome, membership and read state.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app import db, read_state, runtime, store
from app.membership import WELCOME_LIST_MAX, latest_rooms, welcome_room_items
from app.protocol import mentions_in
from app.read_state import ReadState
from app.tokens import Identity
from app.welcome_reads import WelcomeReads
from tests.support.databases import sql
from tests.support.identities import new_user_id, unique


@pytest.fixture
def pool(database_url: str) -> Iterator[db.Pool]:
    pool = db.Pool(database_url, size=2, setup=runtime.prepare_pool_statements)
    yield pool
    pool.close()


def add_users(url: str, *identities: Identity) -> None:
    for identity in identities:
        sql(url, "INSERT INTO users (id, username) VALUES (%s, %s)", (identity.user_id, identity.username))


def add_room(url: str, room: str, *members: Identity) -> None:
    sql(url, "INSERT INTO rooms (name) VALUES (%s)", (room,))
    for member in members:
        sql(url, "INSERT INTO chat_members (room, user_id) VALUES (%s, %s)", (room, member.user_id))


def send(url: str, sender: Identity, content: str, room: str | None = None, to: Identity | None = None) -> int:
    """Store a message as the group commit would (its mentions found from its content)."""
    [(message_id,)] = sql(
        url,
        """INSERT INTO messages (from_user, room, to_user, content, mentions, seq)
           VALUES (%s, %s, %s, %s, %s, 1) RETURNING id""",
        (sender.user_id, room, to and to.user_id, content, mentions_in(content)),
    )
    if to is not None:
        low, high = sorted((sender.user_id, to.user_id))
        sql(
            url,
            """INSERT INTO dm_threads (user_low, user_high, last_seq, last_id) VALUES (%s, %s, 1, %s)
               ON CONFLICT (user_low, user_high) DO UPDATE SET last_seq = dm_threads.last_seq + 1,
                                                             last_id = EXCLUDED.last_id""",
            (low, high, message_id),
        )
    return message_id


def test_users_read_in_one_batch_each_get_their_own_rooms_conversations_and_counts(database_url, pool):
    alice = Identity(new_user_id(), unique("alice"))
    bob = Identity(new_user_id(), unique("bob"))
    add_users(database_url, alice, bob)
    shared, bobs = unique("shared"), unique("bobs")
    add_room(database_url, shared, alice, bob)
    add_room(database_url, bobs, bob)
    send(database_url, bob, f"hello @{alice.username}", room=shared)
    send(database_url, bob, "plain", room=shared)
    send(database_url, alice, "mine", room=shared)
    send(database_url, bob, "alone", room=bobs)
    send(database_url, bob, "psst", to=alice)
    last_dm = send(database_url, bob, f"@{alice.username} there?", to=alice)

    for_alice, for_bob = WelcomeReads(pool).answer_batch([alice, bob])

    assert for_alice.session.username == alice.username
    assert [r.room for r in for_alice.session.rooms] == [shared]
    assert for_alice.room_states == {shared: ReadState(0, 2, 1)}
    assert for_alice.partners == [{"userId": bob.user_id, "username": bob.username, "lastId": last_dm}]
    assert for_alice.dm_states == {bob.user_id: ReadState(0, 2, 1)}
    low, high = sorted((alice.user_id, bob.user_id))
    assert for_alice.session.threads == [(("d", low, high), 2)]

    assert for_bob.session.username == bob.username
    assert sorted(r.room for r in for_bob.session.rooms) == sorted([shared, bobs])
    assert for_bob.room_states == {shared: ReadState(0, 1, 0), bobs: ReadState(0, 0, 0)}
    assert for_bob.partners == [{"userId": alice.user_id, "username": alice.username, "lastId": last_dm}]
    assert for_bob.dm_states == {alice.user_id: ReadState(0, 0, 0)}


def test_a_batch_agrees_with_the_one_user_reads_of_my_rooms_and_conversations(database_url, pool):
    """The lists (`my_rooms`, `conversations`) count one user at a time: the same answers."""
    users = [Identity(new_user_id(), unique(f"u{k}")) for k in range(3)]
    add_users(database_url, *users)
    room = unique("room")
    add_room(database_url, room, *users)
    for k, user in enumerate(users):
        send(database_url, user, f"@{users[(k + 1) % 3].username} and @room", room=room)
        send(database_url, user, "hi", to=users[(k + 2) % 3])

    answers = WelcomeReads(pool).answer_batch(users)

    with pool.autocommit() as cur:
        for user, answer in zip(users, answers, strict=True):
            reads = {r.room: r.last_read_id for r in answer.session.rooms}
            assert answer.room_states == read_state.room_counts(cur, user.user_id, user.username, reads)
            assert answer.partners == store.conversations_of(cur, user.user_id, 200)
            others = [p["userId"] for p in answer.partners]
            assert answer.dm_states == read_state.dm_counts(cur, user.user_id, user.username, others)
            assert answer.room_states[room].mentions == 2  # @room from both others, @name from one


def test_new_users_wanting_one_name_in_one_batch_get_it_once(database_url, pool):
    name = unique("zed")
    first, second = sorted([Identity(new_user_id(), name), Identity(new_user_id(), name)], key=lambda i: i.user_id)
    tokenless = Identity(new_user_id(), None)

    answers = WelcomeReads(pool).answer_batch([second, tokenless, first])

    stored = dict(
        sql(
            database_url,
            "SELECT id, username FROM users WHERE id IN (%s, %s, %s)",
            (first.user_id, second.user_id, tokenless.user_id),
        )
    )
    assert stored == {
        first.user_id: name,
        second.user_id: f"{name}#{second.user_id}",
        tokenless.user_id: f"user{tokenless.user_id}",
    }
    # the name a session goes by is the token's, or else the stored one
    assert [a.session.username for a in answers] == [name, f"user{tokenless.user_id}", name]


def test_a_user_connecting_twice_in_one_batch_gets_the_same_answer_twice(database_url, pool):
    carol = Identity(new_user_id(), unique("carol"))
    room = unique("room")
    add_users(database_url, carol)
    add_room(database_url, room, carol)

    once, twice = WelcomeReads(pool).answer_batch([carol, carol])

    assert once == twice
    assert [r.room for r in once.session.rooms] == [room]


def test_a_user_connecting_twice_in_one_batch_under_two_names_is_counted_by_each_name(database_url, pool):
    """Two devices connect at once with tokens from either side of a rename: each
    connection's mentions are counted by the name its own token gives, as if they had
    connected one after the other."""
    old = Identity(new_user_id(), unique("old"))
    new = Identity(old.user_id, unique("new"))
    sender = Identity(new_user_id(), unique("sender"))
    room = unique("room")
    add_users(database_url, old, sender)
    add_room(database_url, room, old, sender)
    send(database_url, sender, f"hello @{old.username}", room=room)
    send(database_url, sender, f"and @{new.username}", room=room)
    send(database_url, sender, f"again @{new.username}", room=room)

    as_old, as_new, as_old_again = WelcomeReads(pool).answer_batch([old, new, old])

    assert [as_old.session.username, as_new.session.username] == [old.username, new.username]
    assert as_old.room_states[room].mentions == 1
    assert as_new.room_states[room].mentions == 2
    assert as_old_again == as_old


def test_a_new_user_is_added_once_and_read_with_nothing(database_url, pool):
    dave = Identity(new_user_id(), unique("dave"))

    [answer] = WelcomeReads(pool).answer_batch([dave])

    assert answer == (store.Session(dave.username, [], []), [], {}, {})
    assert sql(database_url, "SELECT username FROM users WHERE id = %s", (dave.user_id,)) == [(dave.username,)]


def test_welcome_lists_the_rooms_whose_unread_was_counted_even_when_a_later_message_raised_another():
    # 201 rooms, one more than a welcome lists. Room "r000" was the quietest when read, but a
    # message came before the connection was listed (its floor is the newest id): the
    # welcome still lists the 200 rooms whose counts the batched read gave, in floor order.
    rooms = [store.MemberRoom(f"r{n:03}", last_seq=n, last_id=n, last_read_id=0) for n in range(WELCOME_LIST_MAX + 1)]
    floors = {member.room: member.last_id for member in rooms}
    floors["r000"] = 10_000
    floors["r150"] = 5_000

    items = welcome_room_items(rooms, floors)

    assert "r000" not in {item["room"] for item in items}
    assert {item["room"] for item in items} == {member.room for member in latest_rooms(rooms)}
    newest_first = [f"r{n:03}" for n in range(WELCOME_LIST_MAX, 0, -1) if n != 150]
    assert [item["room"] for item in items] == ["r150", *newest_first]
    assert items[0]["lastId"] == 5_000
