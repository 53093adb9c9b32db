"""Stored membership (PROTOCOL.md §6) and the compatibility endpoint `/` (§7), over a real server."""

from __future__ import annotations

import json
import os
import signal

import psycopg2
import pytest
import websocket

from tests.support.clients import Client, join
from tests.support.databases import sql
from tests.support.identities import make_token, new_user_id, unique
from tests.support.servers import Server
from tests.support.waiting import wait_for


def legacy(server, user_id: int | None = None) -> Client:
    """A client as the shipped React one: at `/` with `?token=`, never joining again."""
    user_id = user_id or new_user_id()
    client = Client.connect(server.url, make_token(user_id, f"user{user_id}"), path="/")
    client.expect("welcome")
    client.user_id, client.username = user_id, f"user{user_id}"
    return client


def send(client: Client, room: str, content: str) -> dict:
    client.send({"type": "message", "room": room, "content": content})
    return client.expect("message", room=room, content=content)["data"]


def test_a_legacy_client_that_never_joins_again_keeps_receiving_after_a_reconnect(server, connect):
    room = unique("blip")
    first = legacy(server)
    join(first, room)
    first.close()
    again = legacy(server, first.user_id)  # no join: the shipped client never sends one again
    sender = connect()
    join(sender, room)
    sent = send(sender, room, "after the blip")
    assert again.expect("message", room=room)["data"] == sent
    again.send({"type": "message", "room": room, "content": "and I can answer"})
    assert sender.expect("message", room=room)["data"]["content"] == "and I can answer"


def test_welcome_lists_the_users_rooms_and_conversations(server, connect):
    room = unique("listed")
    alice, bob = connect(), connect()
    join(alice, room)
    last = send(alice, room, "latest")["id"]
    bob.send({"type": "dm", "to": alice.user_id, "content": "hi"})
    dm = bob.expect("dm_sent")["data"]["message"]["id"]
    again = Client.connect(server.url, make_token(alice.user_id, alice.username))
    data = again.expect("welcome")["data"]
    assert data["rooms"] == [
        {"room": room, "private": False, "role": "member", "lastId": last, "lastReadId": 0, "unread": 0, "mentions": 0}
    ]
    assert data["conversations"] == [
        {"userId": bob.user_id, "username": bob.username, "lastId": dm, "lastReadId": 0, "unread": 1, "mentions": 0}
    ]
    again.close()


def test_two_tabs_follow_one_membership(connect):
    """A join on one tab gives join_ack on both, and both receive; a leave on the other
    gives `left` on both, and neither receives the room any more."""
    room = unique("tabs")
    tab1 = connect()
    tab2 = connect(tab1.user_id, tab1.username)
    sender = connect()
    join(sender, room)
    ack = join(tab1, room)
    assert ack["data"]["members"] == 2 and ack["data"]["lastId"] == 0
    tab2.expect("join_ack", room=room)
    sent = send(sender, room, "to both tabs")
    assert tab1.expect("message", room=room)["data"] == sent
    assert tab2.expect("message", room=room)["data"] == sent
    tab2.send({"type": "leave", "room": room})
    assert tab2.expect("left") == {"type": "left", "room": room}
    assert tab1.expect("left") == {"type": "left", "room": room}
    send(sender, room, "to nobody of theirs")
    tab1.nothing_more("message", wait=0.4)
    tab2.nothing_more("message", wait=0.1)
    tab1.send({"type": "message", "room": room, "content": "gone"})
    tab1.expect_error("not_joined")


def test_my_rooms_pages_past_the_200_of_welcome(server, connect, database_url):
    alice = connect()
    prefix = unique("many")
    sql(
        database_url,
        """INSERT INTO rooms (name) SELECT %s || '-' || g FROM generate_series(1, 205) g;
           INSERT INTO chat_members (room, user_id) SELECT %s || '-' || g, %s FROM generate_series(1, 205) g""",
        (prefix, prefix, alice.user_id),
    )
    again = Client.connect(server.url, make_token(alice.user_id, alice.username))
    listed = again.expect("welcome")["data"]["rooms"]
    assert len(listed) == 200
    names = []
    for offset in (0, 100, 200):
        again.send({"type": "my_rooms", "limit": 100, "offset": offset})
        names += [room["room"] for room in again.expect("my_rooms")["data"]]
    assert len(names) == 205 and len(set(names)) == 205
    assert names[:200] == [room["room"] for room in listed]
    again.send({"type": "my_rooms"})
    assert len(again.expect("my_rooms")["data"]) == 200  # the default page
    # every one of them is live on this connection, without a join
    sender = connect()
    join(sender, names[-1])
    sent = send(sender, names[-1], "to the 205th")
    assert again.expect("message", room=names[-1])["data"] == sent
    again.close()


def test_join_with_since_on_a_member_room_counts_what_came_live_since_welcome(connect):
    room = unique("resume")
    sender = connect()
    join(sender, room)
    reader = connect()
    join(reader, room)
    before = [send(sender, room, f"before {n}")["id"] for n in range(4)]
    for _ in before:
        reader.expect("message", room=room)
    reader.close()
    again = connect(reader.user_id, reader.username)  # a member: listed from welcome on
    live = [send(sender, room, f"live {n}")["id"] for n in range(3)]
    assert [again.expect("message", room=room)["data"]["id"] for _ in live] == live
    join(again, room, since=before[1])  # what it last saw: the replay sends only the gap
    assert [again.expect("message", room=room)["data"]["id"] for _ in before[2:]] == before[2:]
    again.nothing_more("message", wait=0.4)
    after = send(sender, room, "after")["id"]
    assert again.expect("message", room=room)["data"]["id"] == after
    join(again, room, since=before[0])  # once more, from further back
    assert again.expect("message", room=room)["data"]["id"] == before[1]
    again.nothing_more("message", wait=0.4)


def test_a_burst_of_resuming_joins_with_a_leave_inside_replays_each_room_once_in_order(connect):
    """A resuming client's joins are read ahead together (Memberships.read_ahead): a
    leave, a join again and a second join of a room in the same burst change what the
    later joins read, and each is still answered as if handled alone, in order."""
    rooms = [unique("burst") for _ in range(3)]
    sender = connect()
    reader = connect()
    sent = {}
    for room in rooms:
        join(sender, room)
        join(reader, room)
        sent[room] = [send(sender, room, f"{room} {n}")["id"] for n in range(3)]
        for _ in sent[room]:
            reader.expect("message", room=room)
    reader.close()
    again = connect(reader.user_id, reader.username)  # a member of all three from welcome on
    a, b, c = rooms
    burst = [
        {"type": "join", "room": a, "since": sent[a][0]},
        {"type": "leave", "room": b},
        {"type": "join", "room": b, "since": sent[b][1]},
        {"type": "join", "room": c, "since": sent[c][0]},
        {"type": "join", "room": a, "since": sent[a][1]},  # replayed already: nothing more
    ]
    # one write, so that the server reads the whole burst at once
    again.ws.sock.sendall(
        b"".join(websocket.ABNF.create_frame(json.dumps(f), websocket.ABNF.OPCODE_TEXT).format() for f in burst)
    )
    answers = []
    while len([f for f in answers if f[0] == "join_ack"]) < 4 or len(answers) < 10:
        frame = again.recv_any()
        if frame["type"] in ("join_ack", "left", "message"):
            answers.append((frame["type"], frame.get("room") or frame["data"]["room"], frame.get("data", {}).get("id")))
    assert answers == [
        ("join_ack", a, None),
        ("message", a, sent[a][1]),
        ("message", a, sent[a][2]),
        ("left", b, None),
        ("join_ack", b, None),
        ("message", b, sent[b][2]),
        ("join_ack", c, None),
        ("message", c, sent[c][1]),
        ("message", c, sent[c][2]),
        ("join_ack", a, None),
    ]
    again.nothing_more("message", wait=0.4)


def test_compat_endpoint_joins_a_sender_first_and_ws_stays_strict(server, connect):
    room = unique("general")
    listener = connect()
    join(listener, room)
    strict = connect()
    strict.send({"type": "message", "room": room, "content": "not a member"})
    strict.expect_error("not_joined")
    page = legacy(server)
    page.send({"type": "message", "room": room, "content": "typed without a join"})
    page.expect("join_ack", room=room)
    sent = page.expect("message", room=room)["data"]
    assert sent["content"] == "typed without a join"
    assert listener.expect("message", room=room)["data"] == sent
    # a room nobody made yet is made, as `join` makes it
    fresh = unique("fresh")
    page.send({"type": "message", "room": fresh, "content": "first words"})
    page.expect("join_ack", room=fresh)
    assert page.expect("message", room=fresh)["data"]["content"] == "first words"


def test_compat_endpoint_sends_history_as_untyped_frames_too(server, connect):
    room = unique("history")
    sender = connect()
    join(sender, room)
    ids = [send(sender, room, f"h{n}")["id"] for n in range(3)]
    page = legacy(server)
    page.send({"type": "room_history", "room": room, "limit": 50})
    typed = page.expect("room_history")
    assert [m["id"] for m in typed["data"]] == ids
    entries = [page.recv_any() for _ in ids]
    assert [set(entry) for entry in entries] == [{"id", "fromUser", "username", "content", "timestamp"}] * 3
    assert [(e["id"], e["content"]) for e in entries] == [(i, f"h{n}") for n, i in enumerate(ids)]
    sender.send({"type": "room_history", "room": room})
    sender.expect("room_history")
    sender.send({"type": "ping"})
    assert sender.recv_any()["type"] == "pong"  # no untyped frames at /ws


def test_a_private_room_stays_not_found_at_the_compat_endpoint(server, database_url):
    room = unique("private")
    sql(database_url, "INSERT INTO rooms (name, is_private) VALUES (%s, true)", (room,))
    page = legacy(server)
    page.send({"type": "message", "room": room, "content": "let me in"})
    page.expect_error("not_found")
    assert sql(database_url, "SELECT count(*) FROM chat_members WHERE room = %s", (room,)) == [(0,)]


@pytest.mark.slow
def test_a_worker_killed_mid_join_leaves_no_half_member(fresh_database):
    """The join waits for its (room, user) lock, held here; the worker is killed then:
    the room it was creating, the membership and the presence row are all stored or
    none is, and the user's next connection agrees with what is stored."""
    url = fresh_database()
    srv = Server(url).start()
    holder = psycopg2.connect(url)
    holder.autocommit = True
    try:
        user_id, room = new_user_id(), unique("killed")
        client = Client.connect(srv.url, make_token(user_id, "victim"))
        client.expect("welcome")
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (f"presence:{room}:{user_id}",))
        client.send({"type": "join", "room": room})
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%%chat_join%%'"
        wait_for(lambda: sql(url, waiting) == [(1,)], 10, "the join waiting for its lock")
        for pid in srv.worker_pids():
            os.kill(pid, signal.SIGKILL)
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock_all()")
        wait_for(lambda: sql(url, waiting) == [(0,)], 10, "the killed worker's transaction done")
        # PostgreSQL may commit it (the client's death is seen at the answer) or not: all of
        # it, or nothing. The room, the membership and the row stand together.
        counts = [
            sql(url, f"SELECT count(*) FROM {table} WHERE {column} = %s", (room,))[0][0]
            for table, column in (("rooms", "name"), ("chat_members", "room"), ("room_presence", "room"))
        ]
        assert counts in ([0, 0, 0], [1, 1, 1]), counts
        member = counts[1] == 1
        srv.wait_ready()
        again = wait_for(lambda: _connected(srv, user_id), 20, "a new worker serving")
        assert [r["room"] for r in again.expect("welcome")["data"]["rooms"]] == ([room] if member else [])
        again.send({"type": "message", "room": room, "content": "am I in?"})
        if member:
            assert again.expect("message", room=room)["data"]["content"] == "am I in?"
        else:
            again.expect_error("not_found")  # nor was the room made
    finally:
        holder.close()
        srv.stop()


def _connected(srv: Server, user_id: int) -> Client | None:
    try:
        return Client.connect(srv.url, make_token(user_id, "victim"))
    except OSError:
        return None


def test_a_members_join_is_answered_without_waiting_for_a_write(server, connect, database_url):
    """A join of a room the connection receives already (every room of a client resuming
    after a restart) stores nothing: answered and replayed while the (room, user) lock
    that every membership and presence write takes is held elsewhere."""
    room = unique("resumed")
    sender = connect()
    join(sender, room)
    reader = connect()
    join(reader, room)
    seen = send(sender, room, "seen")["id"]
    reader.close()
    missed = send(sender, room, "missed")["id"]
    holder = psycopg2.connect(database_url)
    holder.autocommit = True
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (f"presence:{room}:{reader.user_id}",))
        again = connect(reader.user_id, reader.username)
        ack = join(again, room, since=seen)["data"]
        assert (ack["members"], ack["lastId"]) == (2, missed)
        assert again.user_id in [user["userId"] for user in ack["users"]]
        assert again.expect("message", room=room)["data"]["id"] == missed
    finally:
        holder.close()
    presence = "SELECT count(*) FROM room_presence WHERE room = %s AND user_id = %s"
    wait_for(lambda: sql(database_url, presence, (room, reader.user_id)) == [(1,)], 10, "the presence row written")
