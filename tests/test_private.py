"""Private rooms and invitations (PROTOCOL.md §8), over real servers and clients."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.clients import Client, join
from tests.support.databases import sql
from tests.support.identities import make_token, new_user_id, unique
from tests.support.servers import Server
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def strict_server(database_url: str) -> Iterator[Server]:
    """A server where `join` creates no room (so that joining a name nobody made is an
    error to compare with), and a user creates at most 3 rooms a minute."""
    srv = Server(database_url, ROOMS_AUTO_CREATE="false", ROOMS_CREATE_PER_MINUTE="3").start()
    yield srv
    srv.stop()


def create(client: Client, room: str, private: bool = True, description: str = "") -> dict:
    """Create a room; the join_ack of the creating connection."""
    client.send({"type": "create_room", "room": room, "private": private, "description": description})
    return client.expect("join_ack", room=room)


def send(client: Client, room: str, content: str) -> dict:
    client.send({"type": "message", "room": room, "content": content})
    return client.expect("message", room=room, content=content)["data"]


def no_error(client: Client) -> None:
    """Everything sent before has been handled without an error (frames are answered in order)."""
    client.send({"type": "ping"})
    client.expect("pong")
    assert not [frame for frame in client.seen if frame["type"] == "error"], client.seen


def listed(client: Client) -> dict[str, dict]:
    client.send({"type": "rooms"})
    return {room["name"]: room for room in client.expect("rooms")["data"]}


def members(database_url: str, room: str) -> list[tuple]:
    return sql(database_url, "SELECT user_id, role FROM chat_members WHERE room = %s ORDER BY user_id", (room,))


def test_create_room_makes_the_creator_owner_on_every_tab(server, connect, database_url):
    alice = connect()
    other_tab = connect(alice.user_id, alice.username)
    outsider = connect()
    secret, open_room = unique("secret"), unique("open")
    ack = create(alice, secret, description="the team")
    assert ack["data"]["members"] == 1 and ack["data"]["users"] == [
        {"userId": alice.user_id, "username": alice.username}
    ]
    other_tab.expect("join_ack", room=secret)
    assert members(database_url, secret) == [(alice.user_id, "owner")]
    assert sql(database_url, "SELECT is_private, description FROM rooms WHERE name = %s", (secret,)) == [
        (True, "the team")
    ]
    create(other_tab, open_room, private=False)
    alice.expect("join_ack", room=open_room)
    # both tabs receive the private room
    sent = send(alice, secret, "only us")
    assert other_tab.expect("message", room=secret)["data"] == sent
    # listed for the owner, marked private; not for anyone else
    rooms = listed(alice)
    assert rooms[secret] == {
        "name": secret,
        "description": "the team",
        "online": 1,
        "members": 1,
        "private": True,
        "member": True,
    }
    assert rooms[open_room]["private"] is False and rooms[open_room]["member"] is True
    others = listed(outsider)
    assert secret not in others and others[open_room]["member"] is False
    # a new connection is told which of its rooms are private
    again = Client.connect(server.url, make_token(alice.user_id, alice.username))
    welcome_rooms = {r["room"]: r["private"] for r in again.expect("welcome")["data"]["rooms"]}
    assert welcome_rooms == {secret: True, open_room: False}
    again.send({"type": "my_rooms"})
    assert {r["room"]: r["private"] for r in again.expect("my_rooms")["data"]} == welcome_rooms
    again.close()
    # a name that is taken is `invalid`, whoever holds it
    for client, name in ((outsider, secret), (alice, open_room)):
        client.send({"type": "create_room", "room": name, "private": False})
        assert "exists" in client.expect_error("invalid")["message"]
    assert members(database_url, secret) == [(alice.user_id, "owner")]


@pytest.mark.slow
def test_invite_and_remove_with_two_users_on_two_tabs_each(connect, database_url):
    alice = [connect()]
    alice.append(connect(alice[0].user_id, alice[0].username))
    bob = [connect()]
    bob.append(connect(bob[0].user_id, bob[0].username))
    room = unique("team")
    create(alice[0], room, description="plans")
    alice[1].expect("join_ack", room=room)

    alice[1].send({"type": "invite", "room": room, "userId": bob[0].user_id})
    for tab in bob:
        invited = tab.expect("invited", room=room)
        assert invited == {
            "type": "invited",
            "room": room,
            "data": {
                "room": room,
                "private": True,
                "description": "plans",
                "by": {"userId": alice[0].user_id, "username": alice[0].username},
            },
        }
        assert tab.expect("join_ack", room=room)["data"]["members"] == 2
    for tab in alice:
        tab.expect("presence", room=room, event="join", userId=bob[0].user_id)
    assert members(database_url, room) == sorted([(alice[0].user_id, "owner"), (bob[0].user_id, "member")])

    # both ways, every tab
    sent = send(bob[1], room, "thanks for having me")
    for tab in (*alice, bob[0]):
        assert tab.expect("message", room=room)["data"] == sent
    sent = send(alice[0], room, "welcome")
    for tab in (alice[1], *bob):
        assert tab.expect("message", room=room)["data"] == sent

    # inviting a member again changes nothing and tells nothing
    bob[0].send({"type": "invite", "room": room, "userId": alice[0].user_id})
    alice[0].send({"type": "invite", "room": room, "userId": bob[0].user_id})
    no_error(alice[0])
    no_error(bob[0])
    for tab in bob:
        tab.nothing_more("invited", wait=0.3)

    # removed: every tab of bob gets `left` with the reason, and nothing of the room after it
    alice[0].send({"type": "remove", "room": room, "userId": bob[0].user_id})
    for tab in bob:
        assert tab.expect("left", room=room) == {"type": "left", "room": room, "reason": "removed"}
    for tab in alice:
        tab.expect("presence", room=room, event="leave", userId=bob[0].user_id)
    assert members(database_url, room) == [(alice[0].user_id, "owner")]
    send(alice[0], room, "just us again")
    alice[0].send({"type": "typing", "room": room})
    for tab in bob:
        tab.nothing_more("message", wait=0.3)
        tab.nothing_more("typing", wait=0.1)
    bob[0].send({"type": "room_history", "room": room})
    bob[0].expect_error("not_found")
    bob[0].send({"type": "join", "room": room})
    bob[0].expect_error("not_found")
    assert room not in listed(bob[1])


def test_invite_to_a_public_room_and_the_owners_removal_from_it(connect, database_url):
    owner, guest = connect(), connect()
    room = unique("public")
    create(owner, room, private=False, description="all welcome")
    owner.send({"type": "invite", "room": room, "userId": guest.user_id})
    assert guest.expect("invited", room=room)["data"]["private"] is False
    guest.expect("join_ack", room=room)
    owner.send({"type": "remove", "room": room, "userId": guest.user_id})
    assert guest.expect("left", room=room)["reason"] == "removed"
    # a public room: they may come back by themselves
    join(guest, room)
    assert members(database_url, room) == sorted([(owner.user_id, "owner"), (guest.user_id, "member")])


def strip_room(frame: dict, room: str) -> dict:
    """An error frame with the room's name taken out, to compare two rooms' errors."""
    return json.loads(json.dumps(frame).replace(room, "ROOM"))


def test_a_private_room_does_not_exist_for_non_members(strict_server, database_url):
    """Every frame about a private room from a non-member gets the error a room nobody
    made gets, with the same text (names aside); nothing is stored."""
    owner = _connect(strict_server)
    secret, missing = unique("hidden"), unique("nothing")
    create(owner, secret)
    send(owner, secret, "for members")
    before = sql(database_url, "SELECT count(*) FROM messages WHERE room = %s", (secret,))
    ws, legacy = _connect(strict_server), _connect(strict_server, path="/")
    for client in (ws, legacy):
        assert secret not in listed(client)
        for frame in (
            {"type": "join", "room": "ROOM"},
            {"type": "join", "room": "ROOM", "since": 0},
            {"type": "room_history", "room": "ROOM"},
            {"type": "room_history", "room": "ROOM", "after": 0},
            {"type": "typing", "room": "ROOM"},
            {"type": "message", "room": "ROOM", "content": "let me in"},
            {"type": "leave", "room": "ROOM"},
            {"type": "invite", "room": "ROOM", "userId": client.user_id},
            {"type": "invite", "room": "ROOM", "userId": owner.user_id},
            {"type": "remove", "room": "ROOM", "userId": owner.user_id},
        ):
            errors = []
            for room in (secret, missing):
                client.send({**frame, "room": room})
                errors.append(strip_room(client.expect("error"), room))
            assert errors[0] == errors[1], (frame, errors)
            assert errors[0]["code"] == "not_found", (frame, errors[0])
    assert sql(database_url, "SELECT count(*) FROM messages WHERE room = %s", (secret,)) == before
    assert members(database_url, secret) == [(owner.user_id, "owner")]
    assert sql(database_url, "SELECT 1 FROM rooms WHERE name = %s", (missing,)) == []
    ws.nothing_more("message", wait=0.2)


def test_create_room_counts_against_the_creation_limit(strict_server, database_url):
    creator = _connect(strict_server)
    for _ in range(3):
        create(creator, unique("quota"))
    refused = unique("quota")
    creator.send({"type": "create_room", "room": refused, "private": True})
    assert creator.expect_error("rate_limited")["room"] == refused
    assert sql(database_url, "SELECT 1 FROM rooms WHERE name = %s", (refused,)) == []


@pytest.mark.slow
def test_a_room_turned_private_in_sql_is_cut_off_from_non_members_at_once(server, connect, database_url):
    """The existing backend flips rooms.is_private: members keep the room; from the
    commit on, a live non-member connection gets not_found for it, and the list (shared
    for a second) no longer holds it."""
    room = unique("flip")
    member, other_member, outsider = connect(), connect(), connect()
    join(member, room)
    join(other_member, room)
    send(member, room, "while public")
    outsider.send({"type": "room_history", "room": room})
    assert len(outsider.expect("room_history")["data"]) == 1
    wait_for(lambda: room in listed(outsider), 3, "the new room in the list", pause=0.25)  # (read once a second)

    sql(database_url, "UPDATE rooms SET is_private = true WHERE name = %s", (room,))
    for frame in (
        {"type": "room_history", "room": room},
        {"type": "join", "room": room},
        {"type": "join", "room": room, "since": 0},
        {"type": "typing", "room": room},
        {"type": "invite", "room": room, "userId": outsider.user_id},
    ):
        outsider.send(frame)
        outsider.expect_error("not_found")
    assert room not in listed(outsider)
    # the members keep it, now private
    sent = send(member, room, "now private")
    assert other_member.expect("message", room=room, content="now private")["data"] == sent
    outsider.nothing_more("message", wait=0.3)
    assert listed(member)[room]["private"] is True
    member.send({"type": "invite", "room": room, "userId": outsider.user_id})
    outsider.expect("invited", room=room)
    assert outsider.expect("join_ack", room=room)["data"]["members"] == 3


def test_bad_invitations_and_removals_change_nothing(connect, database_url):
    owner, member, outsider = connect(), connect(), connect()
    secret, public, joined = unique("secret"), unique("public"), unique("joined")
    create(owner, secret)
    create(owner, public, private=False)
    owner.send({"type": "invite", "room": secret, "userId": member.user_id})
    member.expect("invited", room=secret)
    member.expect("join_ack", room=secret)
    join(member, joined)  # a room made by join: nobody owns it
    unknown = new_user_id()
    snapshot = {room: members(database_url, room) for room in (secret, public, joined)}
    cases = [
        (owner, {"type": "invite", "room": secret, "userId": unknown}, "not_found"),
        (owner, {"type": "invite", "room": unique("none"), "userId": member.user_id}, "not_found"),
        (outsider, {"type": "invite", "room": secret, "userId": outsider.user_id}, "not_found"),
        (outsider, {"type": "invite", "room": public, "userId": outsider.user_id}, "not_joined"),
        (member, {"type": "remove", "room": secret, "userId": owner.user_id}, "forbidden"),
        (outsider, {"type": "remove", "room": public, "userId": owner.user_id}, "forbidden"),
        (owner, {"type": "remove", "room": secret, "userId": owner.user_id}, "forbidden"),
        (owner, {"type": "remove", "room": secret, "userId": outsider.user_id}, "not_found"),
        (owner, {"type": "remove", "room": secret, "userId": unknown}, "not_found"),
        (member, {"type": "remove", "room": joined, "userId": member.user_id}, "forbidden"),
        (outsider, {"type": "remove", "room": secret, "userId": member.user_id}, "not_found"),
        (owner, json.dumps({"type": "invite", "room": secret, "userId": 0}), "not_found"),
        # frames the schemas refuse go out raw
        (owner, json.dumps({"type": "invite", "room": secret, "userId": "bob"}), "invalid"),
        (owner, json.dumps({"type": "invite", "room": secret}), "invalid"),
        (owner, json.dumps({"type": "create_room", "room": unique("x"), "private": "yes"}), "invalid"),
        (owner, json.dumps({"type": "create_room", "room": unique("x"), "description": 7}), "invalid"),
        (owner, json.dumps({"type": "create_room", "room": "bad name!"}), "invalid"),
        (owner, json.dumps({"type": "create_room", "room": unique("x"), "description": "d" * 501}), "too_large"),
    ]
    for client, frame, code in cases:
        client.send(frame)
        error = client.expect_error(code)
        assert error["requestType"] in ("invite", "remove", "create_room"), error
    for client in (owner, member, outsider):
        no_error(client)
        client.nothing_more("invited", wait=0.1)
        client.nothing_more("left", wait=0.1)
    assert {room: members(database_url, room) for room in snapshot} == snapshot


def _connect(srv: Server, path: str = "/ws") -> Client:
    user_id = new_user_id()
    client = Client.connect(srv.url, make_token(user_id, f"user{user_id}"), path=path)
    client.expect("welcome")
    client.user_id, client.username = user_id, f"user{user_id}"
    return client


def test_the_frames_tell_who_owns_a_room(server, connect):
    """The page shows `remove` to the owner only: welcome, my_rooms and join_ack say who it is
    (an addition to PROTOCOL.md), on every tab and for every member."""
    room, plain = unique("owned"), unique("plain")
    alice = connect()
    alice_tab = connect(alice.user_id, alice.username)
    bob = connect()
    ack = create(alice, room, private=False)
    assert ack["data"]["owner"] == alice.user_id
    assert alice_tab.expect("join_ack", room=room)["data"]["owner"] == alice.user_id  # (by the member event)
    assert join(bob, room)["data"]["owner"] == alice.user_id
    assert "owner" not in join(bob, plain)["data"]  # made by `join`: nobody owns it
    # a join of a room the connection receives already (a resume) says it too
    assert join(bob, room)["data"]["owner"] == alice.user_id
    assert "owner" not in join(bob, plain)["data"]

    def roles(client: Client) -> dict[str, str]:
        client.send({"type": "my_rooms"})
        return {item["room"]: item["role"] for item in client.expect("my_rooms")["data"]}

    assert roles(alice)[room] == "owner"
    assert roles(bob) == {room: "member", plain: "member"}
    again = Client.connect(server.url, make_token(alice.user_id, alice.username))
    try:
        rooms = again.expect("welcome")["data"]["rooms"]
    finally:
        again.close()
    assert {item["room"]: item["role"] for item in rooms} == {room: "owner"}
