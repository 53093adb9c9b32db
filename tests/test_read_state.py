"""Read state (PROTOCOL.md §9): stored markers, unread and mention counts, over a real server."""

from __future__ import annotations

import json

import pytest

from app.bus import CHANNEL
from tests.support.clients import Client, join
from tests.support.databases import sql
from tests.support.identities import make_token, new_user_id, unique
from tests.support.servers import Server


def send(client: Client, room: str, content: str) -> int:
    client.send({"type": "message", "room": room, "content": content})
    return client.expect("message", room=room, content=content, fromUser=client.user_id)["data"]["id"]


def dm(client: Client, to: int, content: str) -> int:
    client.send({"type": "dm", "to": to, "content": content})
    return client.expect("dm_sent")["data"]["message"]["id"]


def welcome_of(server: Server, user: Client) -> dict:
    again = Client.connect(server.url, make_token(user.user_id, user.username))
    data = again.expect("welcome")["data"]
    again.close()
    return data


def room_in(items: list[dict], room: str) -> dict:
    return next(item for item in items if item["room"] == room)


def test_unread_and_mentions_are_counted_in_welcome_and_my_rooms(server, connect):
    """Others' messages after the marker count, the user's own do not; a mention is
    @name as a whole word in any case, or @room."""
    room = unique("unread")
    alice = connect(username=unique("alice").replace("-", ""))
    bob = connect()
    join(alice, room)
    join(bob, room)
    send(alice, room, f"mine, even with @{alice.username}")
    name = alice.username
    contents = [
        "hello",
        f"hey @{name.upper()}!",  # a mention: case does not matter
        f"@{name}a is someone else",
        f"mail me at x@{name}.com",  # an address, not a mention
        "@room all of you",
        f"(@{name}), twice: @{name}",  # one message: one mention
    ]
    for content in contents:
        last = send(bob, room, content)
    welcome = room_in(welcome_of(server, alice)["rooms"], room)
    assert welcome == {**welcome, "lastId": last, "lastReadId": 0, "unread": 6, "mentions": 3}
    alice.send({"type": "my_rooms"})
    assert room_in(alice.expect("my_rooms")["data"], room) == welcome
    # To bob, who joined before it, alice's message is unread (and mentions nobody he is);
    # his own are not.
    assert room_in(welcome_of(server, bob)["rooms"], room)["unread"] == 1


def test_read_moves_forward_only_and_is_told_to_every_tab(server, connect):
    room = unique("marker")
    alice = connect()
    tab2 = connect(alice.user_id, alice.username)
    bob = connect()
    join(alice, room)
    tab2.expect("join_ack", room=room)
    join(bob, room)
    ids = [send(bob, room, f"{n} @{alice.username}") for n in range(4)]
    alice.send({"type": "read", "room": room, "id": ids[1]})
    # (countedUpTo: the newest message the counts include)
    expected = {
        "type": "read",
        "room": room,
        "data": {"lastReadId": ids[1], "unread": 2, "mentions": 2, "countedUpTo": ids[-1]},
    }
    assert alice.expect("read") == expected
    assert tab2.expect("read") == expected
    # An older id changes nothing: the state as it stands is told again.
    tab2.send({"type": "read", "room": room, "id": ids[0]})
    assert tab2.expect("read") == expected
    assert alice.expect("read") == expected
    assert room_in(welcome_of(server, alice)["rooms"], room)["lastReadId"] == ids[1]
    # Past the newest message counts as the newest: later messages stay unread.
    alice.send({"type": "read", "room": room, "id": ids[-1] + 10_000})
    assert alice.expect("read")["data"] == {"lastReadId": ids[-1], "unread": 0, "mentions": 0, "countedUpTo": ids[-1]}
    later = send(bob, room, "after the read")
    data = room_in(welcome_of(server, alice)["rooms"], room)
    assert data == {**data, "lastId": later, "lastReadId": ids[-1], "unread": 1, "mentions": 0}


def test_dm_read_state_in_welcome_conversations_and_read(server, connect):
    alice, bob = connect(), connect()
    first = dm(bob, alice.user_id, f"hi @{alice.username}")
    second = dm(bob, alice.user_id, "are you there?")
    dm(alice, bob.user_id, "mine: not unread to me")
    conversation = {"userId": bob.user_id, "username": bob.username, "lastReadId": 0, "unread": 2, "mentions": 1}
    listed = next(c for c in welcome_of(server, alice)["conversations"] if c["userId"] == bob.user_id)
    assert listed == {**listed, **conversation}
    alice.send({"type": "conversations"})
    page = alice.expect("conversations")["data"]
    assert next(c for c in page if c["userId"] == bob.user_id) == listed
    alice.send({"type": "read", "with": bob.user_id, "id": first})
    assert alice.expect("read") == {
        "type": "read",
        "with": bob.user_id,
        "data": {"lastReadId": first, "unread": 1, "mentions": 0, "countedUpTo": second},
    }
    alice.send({"type": "read", "with": bob.user_id, "id": second})
    # (countedUpTo: bob's newest; alice's own later message is no business of her counts)
    assert alice.expect("read")["data"] == {"lastReadId": second, "unread": 0, "mentions": 0, "countedUpTo": second}
    # Bob's read state is his own: alice's answer is unread to him.
    listed = next(c for c in welcome_of(server, bob)["conversations"] if c["userId"] == alice.user_id)
    assert listed["unread"] == 1 and listed["lastReadId"] == 0


@pytest.mark.parametrize(
    "frame, code",
    [
        ({"type": "read", "room": "never-made-{}", "id": 1}, "not_found"),
        ({"type": "read", "with": 2**62, "id": 1}, "not_found"),
        ({"type": "read", "room": "x"}, "invalid"),
        ({"type": "read", "id": 1}, "invalid"),
        ({"type": "read", "room": "x", "with": 1, "id": 1}, "invalid"),
        ({"type": "read", "room": "x", "id": -1}, "invalid"),
        ({"type": "read", "room": "x", "id": "one"}, "invalid"),
    ],
)
def test_bad_reads_get_an_error_and_the_connection_stays_usable(connect, frame, code):
    client = connect()
    if "room" in frame:
        frame = {**frame, "room": frame["room"].format(new_user_id())}
    client.send(frame if code != "invalid" else json.dumps(frame))  # (refused by the schema: sent raw)
    client.expect_error(code)
    client.send({"type": "ping"})
    client.expect("pong")


def test_reading_a_room_one_is_not_a_member_of_is_not_joined(connect):
    room = unique("outside")
    owner, other = connect(), connect()
    join(owner, room)
    last = send(owner, room, "inside")
    other.send({"type": "read", "room": room, "id": last})
    other.expect_error("not_joined")
    other.send({"type": "ping"})
    other.expect("pong")


@pytest.mark.cluster
def test_a_read_reaches_the_users_connections_on_another_server(fresh_database):
    """A read on one server is told to the user's connection on another (over the bus),
    with counts that include a message stored through the other server."""
    database_url = fresh_database()
    servers = [Server(database_url, HEARTBEAT_SECONDS="0.5", NODE_TIMEOUT_SECONDS="3").start() for _ in range(2)]
    clients: list[Client] = []
    try:

        def connect_to(srv: Server, user_id: int) -> Client:
            client = Client.connect(srv.url, make_token(user_id, f"user{user_id}"))
            client.expect("welcome")
            client.user_id, client.username = user_id, f"user{user_id}"
            clients.append(client)
            return client

        alice_id, bob_id = new_user_id(), new_user_id()
        alice_a = connect_to(servers[0], alice_id)
        alice_b = connect_to(servers[1], alice_id)
        bob = connect_to(servers[1], bob_id)
        room = unique("across")
        join(alice_a, room)
        alice_b.expect("join_ack", room=room)
        join(bob, room)
        ids = [send(bob, room, f"m{n} @room") for n in range(3)]
        alice_a.expect("message", id=ids[-1])
        alice_a.send({"type": "read", "room": room, "id": ids[0]})
        data = {"lastReadId": ids[0], "unread": 2, "mentions": 2, "countedUpTo": ids[-1]}
        expected = {"type": "read", "room": room, "data": data}  # (the other server's copy carries countedUpTo too)
        assert alice_a.expect("read") == expected
        assert alice_b.expect("read") == expected
        bob.nothing_more("read")
    finally:
        for client in clients:
            client.close()
        for srv in servers:
            srv.stop()


def test_a_read_state_older_than_one_a_connection_was_told_is_not_sent_to_it(server, connect):
    """Two tabs on two workers read at once: each worker tells its state to every tab, so
    a tab can get the newer state first. The older one, coming second, would move the
    tab's marker back: it is not sent. (The other worker's state is sent as a worker
    would, by NOTIFY on the bus.)"""
    room = unique("told")
    alice = connect()
    bob = connect()
    join(alice, room)
    join(bob, room)
    first = send(bob, room, "one")
    second = send(bob, room, "two")
    alice.send({"type": "read", "room": room, "id": second})
    assert alice.expect("read", room=room)["data"]["lastReadId"] == second

    [(deployment,)] = sql(server.database_url, "SELECT id FROM chat_deployment")

    def from_another_worker(last_read_id: int, unread: int) -> None:
        state = {"lastReadId": last_read_id, "unread": unread, "mentions": 0, "countedUpTo": second}
        body = json.dumps({"k": "read", "userId": alice.user_id, "room": room, "d": state})
        sql(server.database_url, "SELECT pg_notify(%s, %s)", (CHANNEL, f"{deployment}/another-worker|{body}"))

    from_another_worker(first, unread=1)  # older than what alice was told
    from_another_worker(second, unread=0)  # the same again: sent (it may answer a read)
    assert alice.expect("read", room=room)["data"] == {
        "lastReadId": second,
        "unread": 0,
        "mentions": 0,
        "countedUpTo": second,
    }
    alice.nothing_more("read")
