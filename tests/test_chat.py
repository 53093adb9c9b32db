"""The protocol end to end: a real gunicorn gevent server, real WebSocket clients, real PostgreSQL."""

from __future__ import annotations

import json
import re
import socket
import time

import jwt
import pytest
import websocket

from app.config import DEFAULTS
from tests.support.asyncapi import check_server_frame
from tests.support.clients import Client, assert_closed_with, join
from tests.support.databases import sql
from tests.support.frames import BAD_FRAMES, GOOD_HEADERS, WEBSOCKET_KEY
from tests.support.identities import SECRET, make_token, new_user_id, unique
from tests.support.servers import Server
from tests.support.waiting import wait_for

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
LEEWAY = DEFAULTS["JWT_LEEWAY_SECONDS"]  # the test server's clock skew allowance


# --- authentication --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["query", "header", "frame"])
@pytest.mark.parametrize("path", ["/ws", "/"])
def test_every_way_to_authenticate_gets_welcome(server, how, path):
    user_id = new_user_id()
    client = Client.connect(server.url, make_token(user_id, "ann"), how=how, path=path)
    welcome = client.expect("welcome")
    assert welcome["data"]["userId"] == user_id
    assert welcome["data"]["username"] == "ann"
    assert TIMESTAMP.match(welcome["data"]["serverTime"])
    client.close()


def test_header_token_wins_over_query(server):
    header_user, query_user = new_user_id(), new_user_id()
    ws = websocket.create_connection(
        f"{server.url}/ws?token={make_token(query_user)}",
        header=[f"Authorization: Bearer {make_token(header_user)}"],
        timeout=5,
    )
    assert check_server_frame(json.loads(ws.recv()))["data"]["userId"] == header_user
    ws.close()


def test_sub_claim_as_string_and_unknown_user_is_created(server, database_url):
    user_id = new_user_id()
    token = jwt.encode({"sub": str(user_id), "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    client = Client.connect(server.url, token)
    welcome = client.expect("welcome")
    assert welcome["data"] == {**welcome["data"], "userId": user_id, "username": f"user{user_id}"}
    assert sql(database_url, "SELECT username FROM users WHERE id = %s", (user_id,)) == [(f"user{user_id}",)]
    client.close()


def test_username_comes_from_users_table_when_token_has_none(server, database_url):
    user_id = new_user_id()
    sql(database_url, "INSERT INTO users (id, username) VALUES (%s, %s)", (user_id, f"stored{user_id}"))
    client = Client.connect(server.url, make_token(user_id))
    assert client.expect("welcome")["data"]["username"] == f"stored{user_id}"
    client.close()


@pytest.mark.parametrize(
    "claimed",
    ["n" * 65, "   ", "ab\u0000cd", "ab\ud800cd", "two\nlines"],
    ids=["65 chars", "blank", "NUL", "surrogate", "newline"],
)
@pytest.mark.parametrize("how", ["query", "frame"])
def test_a_token_whose_username_cannot_be_a_name_still_connects(server, database_url, claimed, how):
    """The claim is ignored (the stored name is used), as for a token without one."""
    user_id = new_user_id()
    sql(database_url, "INSERT INTO users (id, username) VALUES (%s, %s)", (user_id, f"stored{user_id}"))
    client = Client.connect(server.url, make_token(user_id, claimed), how=how)
    assert client.expect("welcome")["data"]["username"] == f"stored{user_id}"
    room = unique("names")
    join(client, room)
    client.send({"type": "message", "room": room, "content": "still me"})
    assert client.expect("message", room=room)["data"]["username"] == f"stored{user_id}"
    client.close()


BAD_TOKENS = {
    "wrong secret": lambda uid: make_token(uid, secret="another-secret-another-secret-123"),
    "expired": lambda uid: make_token(uid, exp=int(time.time()) - LEEWAY - 30),
    "expired a second ago": lambda uid: make_token(uid, exp=int(time.time()) - 1),  # exp has no leeway
    "not yet valid": lambda uid: make_token(uid, nbf=int(time.time()) + LEEWAY + 30),
    "issued in the future": lambda uid: make_token(uid, iat=int(time.time()) + LEEWAY + 30),
    "alg none": lambda uid: jwt.encode({"user_id": uid}, None, algorithm="none"),
    "HS512": lambda uid: jwt.encode({"user_id": uid}, SECRET, algorithm="HS512"),
    "no user id": lambda uid: jwt.encode({"username": "x"}, SECRET, algorithm="HS256"),
    "user id beyond bigint": lambda uid: jwt.encode({"user_id": 2**70}, SECRET, algorithm="HS256"),
    "garbage": lambda uid: "not.a.jwt",
    "empty": lambda uid: "",
    "non-ASCII digits": lambda uid: jwt.encode({"sub": "\u00b2"}, SECRET, algorithm="HS256"),
}


@pytest.mark.parametrize("kind", BAD_TOKENS)
def test_bad_token_at_handshake_is_refused_with_401(server, kind):
    token = BAD_TOKENS[kind](new_user_id())
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(f"{server.url}/ws?token={token}", timeout=5)
    assert info.value.status_code == 401
    assert not token or token not in server.log()


# Upgrade requests that break the handshake's rules: (headers, status expected)
BAD_UPGRADES = {
    "no key": ("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13", 400),
    "key not 16 bytes": (
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13",
        400,
    ),
    "no Connection: Upgrade": (
        f"Upgrade: websocket\r\nSec-WebSocket-Key: {WEBSOCKET_KEY}\r\nSec-WebSocket-Version: 13",
        400,
    ),
    "version 8": (
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {WEBSOCKET_KEY}\r\nSec-WebSocket-Version: 8",
        426,
    ),
    "key not ASCII": (
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: d\u00e9jà\r\nSec-WebSocket-Version: 13",
        400,
    ),
    "no version": (f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {WEBSOCKET_KEY}", 426),
}


@pytest.mark.parametrize("kind", BAD_UPGRADES)
def test_a_malformed_upgrade_request_is_a_client_error_not_a_server_one(server, kind):
    """Anyone may send these, token or not: a 4xx answer, and no error traceback in the log."""
    headers, status = BAD_UPGRADES[kind]
    token = make_token(new_user_id(), "upgrader")
    logged_before = len(server.log())
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(f"GET /ws?token={token} HTTP/1.1\r\nHost: chat\r\n{headers}\r\n\r\n".encode())
        answer = sock.recv(4096).decode()
    assert answer.startswith(f"HTTP/1.1 {status} "), answer
    if status == 426:
        assert "Sec-WebSocket-Version: 13" in answer
    log = server.log()[logged_before:]  # (written before the answer was sent)
    assert "Traceback" not in log and " ERROR " not in log
    assert token not in log


def test_a_token_with_many_claims_fits_in_the_query_string(server):
    """Browsers cannot set headers on a WebSocket, so the token travels in the URL: one of
    5 KB (many claims) was past gunicorn's default request line, a 414."""
    user_id = new_user_id()
    token = make_token(user_id, "claims", roles=["r" * 40] * 100)
    assert len(token) > 5000
    client = Client.connect(server.url, token)
    assert client.expect("welcome")["data"]["userId"] == user_id


@pytest.mark.parametrize(
    "request_line,upgrade,status",
    [
        ("GET /ws HTTP/1.0", "websocket", 400),  # RFC 6455 §4.1: HTTP/1.1 at least
        ("GET /ws HTTP/1.1", "WebSocket", 101),
        ("GET /ws HTTP/1.1", "websocket, h2c", 101),  # a list (RFC 7230 §6.7): WebSocket is taken
        ("GET /ws HTTP/1.1", "h2c, WebSocket", 101),
        ("GET /ws HTTP/1.1", "h2c, websocket2", 400),  # (no route but the WebSocket one here)
    ],
    ids=["HTTP/1.0", "Upgrade case", "Upgrade list", "Upgrade list, second", "Upgrade list without it"],
)
def test_an_upgrade_is_judged_by_the_http_rules(server, request_line, upgrade, status):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(f"{request_line}\r\nHost: chat\r\nUpgrade: {upgrade}\r\n{GOOD_HEADERS}\r\n\r\n".encode())
        answer = sock.recv(4096).decode()
    assert answer.split(" ")[1] == str(status), answer


# Tokens of an issuer whose clock runs a few seconds ahead of ours: taken within
# JWT_LEEWAY_SECONDS (on iat and nbf; exp has none: BAD_TOKENS).
SKEWED_TOKENS = {
    "issued ahead": lambda uid: make_token(uid, iat=int(time.time()) + LEEWAY - 2),
    "valid from ahead": lambda uid: make_token(uid, nbf=int(time.time()) + LEEWAY - 2),
}


@pytest.mark.parametrize("how", ["query", "header", "frame"])
@pytest.mark.parametrize("kind", SKEWED_TOKENS)
def test_a_token_within_the_clock_skew_leeway_is_taken(server, kind, how):
    user_id = new_user_id()
    client = Client.connect(server.url, SKEWED_TOKENS[kind](user_id), how=how)
    assert client.expect("welcome")["data"]["userId"] == user_id
    client.send({"type": "auth", "token": SKEWED_TOKENS[kind](user_id)})  # and as a renewal
    assert client.expect("auth_ok")["data"]["userId"] == user_id
    client.close()


@pytest.mark.parametrize(
    "kind", ["wrong secret", "expired", "expired a second ago", "alg none", "not yet valid", "issued in the future"]
)
def test_bad_auth_frame_closes_with_4001(server, kind):
    client = Client.connect(server.url)
    client.send({"type": "auth", "token": BAD_TOKENS[kind](new_user_id())})
    assert client.expect("error")["code"] == "unauthorized"
    assert_closed_with(client, 4001)


def test_other_frame_before_auth_closes_with_4001(server):
    client = Client.connect(server.url)
    client.send({"type": "join", "room": "general"})
    assert client.expect("error")["code"] == "unauthorized"
    assert_closed_with(client, 4001)


@pytest.mark.slow
def test_no_auth_within_timeout_closes_with_4001(server):
    client = Client.connect(server.url)  # the test server gives 1.5 s
    assert client.expect("error", timeout=5)["code"] == "unauthorized"
    assert_closed_with(client, 4001)


@pytest.mark.slow
def test_a_connection_is_closed_with_4001_when_its_token_expires(server):
    """At `exp`, to the second (PROTOCOL.md, LEGACY-CLIENT.md: closed at exp with 4001)."""
    user_id = new_user_id()
    client = Client.connect(server.url, make_token(user_id, exp=int(time.time()) + 4))
    client.expect("welcome")
    client.nothing_more("error", wait=1.5)  # the expiry check passes once a second
    join(client, unique("expiring"))
    client.send({"type": "ping"})
    client.expect("pong")  # usable until the expiry
    error = client.expect_error("unauthorized", timeout=5)
    assert "expired" in error["message"]
    assert_closed_with(client, 4001)


@pytest.mark.slow
def test_a_fresh_token_of_the_same_user_keeps_the_connection_open(server):
    user_id = new_user_id()
    client = Client.connect(server.url, make_token(user_id, exp=int(time.time()) + 2))
    client.expect("welcome")
    later = int(time.time()) + 3600
    client.send({"type": "auth", "token": make_token(user_id, exp=later)})
    ok = client.expect("auth_ok")
    assert ok["data"]["userId"] == user_id
    assert ok["data"]["expiresAt"] == time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(later))
    time.sleep(3)  # past the first token's expiry
    client.send({"type": "ping"})
    assert client.recv_any()["type"] == "pong"


@pytest.mark.parametrize("kind", ["another user", "expired", "expired a second ago", "wrong secret", "garbage"])
def test_a_refused_fresh_token_is_an_error_and_the_old_one_still_counts(server, kind):
    user_id = new_user_id()
    client = Client.connect(server.url, make_token(user_id))
    client.expect("welcome")
    token = make_token(new_user_id()) if kind == "another user" else BAD_TOKENS[kind](user_id)
    client.send({"type": "auth", "token": token})
    assert client.expect("error")["code"] == "unauthorized"
    client.send({"type": "ping"})
    client.expect("pong")


def test_server_ends_the_tcp_connection_once_the_close_handshake_is_done(connect):
    """Once close frames have crossed, the server closes TCP at once (RFC 6455 §7.1.1):
    clients waiting for that do not hang."""
    client = connect()
    client.ws.send_close(1000)
    # Read the raw stream (websocket-client would answer the close frame once more).
    client.ws.sock.settimeout(0.8)  # the server used to linger a full second
    received = b""
    while chunk := client.ws.sock.recv(64):
        received += chunk
    assert received == b"\x88\x02\x03\xe8"  # the server's close frame (1000), then EOF


# --- rooms, presence, messages ---------------------------------------------------------------------


def test_join_ack_lists_online_users_and_presence_is_per_user(connect):
    room = unique("room")
    alice, bob = connect(), connect()
    ack = join(alice, room)
    assert ack["data"] == {
        "room": room,
        "status": "ok",
        "users": [{"userId": alice.user_id, "username": alice.username}],
        "online": 1,
        "members": 1,
        "lastId": 0,
    }
    ack = join(bob, room)
    assert {u["userId"] for u in ack["data"]["users"]} == {alice.user_id, bob.user_id}
    event = alice.expect("presence", room=room)
    assert event["data"] == {"event": "join", "userId": bob.user_id, "username": bob.username}
    # A second tab of bob: no second presence event; closing it: no leave either.
    bob2 = connect(bob.user_id, bob.username)
    join(bob2, room)
    bob2.close()
    alice.nothing_more("presence", wait=0.7)
    bob.send({"type": "leave", "room": room})
    assert bob.expect("left") == {"type": "left", "room": room}
    event = alice.expect("presence", room=room)
    assert event["data"]["event"] == "leave" and event["data"]["userId"] == bob.user_id


def test_two_tabs_joining_at_once_announce_one_presence(connect):
    room = unique("room")
    alice = connect()
    join(alice, room)
    bob = connect()
    bob2 = connect(bob.user_id, bob.username)
    # Both tabs ask before either is acknowledged: one user came, one event.
    bob.send({"type": "join", "room": room})
    bob2.send({"type": "join", "room": room})
    bob.expect("join_ack", room=room)
    bob2.expect("join_ack", room=room)
    alice.expect("presence", room=room, event="join")
    alice.nothing_more("presence", wait=0.7)
    # Membership is the user's: one tab's leave ends it for both, the other's join
    # makes bob a member again, on both tabs.
    bob.send({"type": "leave", "room": room})
    bob.expect("left", room=room)
    bob2.expect("left", room=room)
    assert alice.expect("presence", room=room)["data"]["event"] == "leave"
    bob2.send({"type": "join", "room": room})
    bob2.expect("join_ack", room=room)
    bob.expect("join_ack", room=room)
    assert alice.expect("presence", room=room)["data"]["event"] == "join"
    carol = connect()
    assert bob.user_id in {user["userId"] for user in join(carol, room)["data"]["users"]}


def test_a_page_reloaded_again_and_again_keeps_the_user_online(connect, database_url):
    """One connection of a member closes as the next one opens, again and again: the
    member is online at the end, and whatever the order the two were handled in, the
    others' events about them alternate and end with a join."""
    room = unique("room")
    alice = connect()
    join(alice, room)
    bob = connect()
    join(bob, room)
    alice.expect("presence", room=room, event="join")
    for _ in range(10):
        again = connect(bob.user_id, bob.username)  # welcome read: listed in the room
        bob.close()
        bob = again
    bobs_row = "SELECT count(*) FROM room_presence WHERE room = %s AND user_id = %s"
    wait_for(lambda: sql(database_url, bobs_row, (room, bob.user_id)) == [(1,)], 5, "bob's presence row")
    events = []
    with pytest.raises(TimeoutError):
        while True:
            events.append(alice.expect("presence", room=room, timeout=0.7)["data"]["event"])
    assert events == ["leave", "join"] * (len(events) // 2)
    carol = connect()
    assert bob.user_id in {user["userId"] for user in join(carol, room)["data"]["users"]}


def test_history_names_senders_as_their_tokens_did(connect, database_url):
    """A message keeps the name it was sent under, live and in history alike, even when
    the users table holds another name for the sender."""
    room = unique("room")
    taken = unique("carol")
    first = connect(username=taken)
    second = connect(username=taken)  # another user claiming the same name
    renamed = new_user_id()
    sql(database_url, "INSERT INTO users (id, username) VALUES (%s, %s)", (renamed, unique("oldname")))
    third = connect(renamed, "newname")
    for client in (first, second, third):
        join(client, room)
    names = {}
    for client in (second, third):
        client.send({"type": "message", "room": room, "content": "hello"})
        live = client.expect("message", room=room, fromUser=client.user_id)["data"]
        names[live["id"]] = live["username"]
    assert sorted(names.values()) == sorted([taken, "newname"])
    first.send({"type": "room_history", "room": room})
    history = {m["id"]: m["username"] for m in first.expect("room_history")["data"]}
    assert history == names
    fourth = connect()
    users = {u["userId"]: u["username"] for u in join(fourth, room)["data"]["users"]}
    assert users[second.user_id] == taken and users[third.user_id] == "newname"


def test_room_message_reaches_every_member_and_is_stored(connect, database_url):
    room = unique("room")
    alice, bob, carol = connect(), connect(), connect()
    for client in (alice, bob, carol):
        join(client, room)
    alice.send({"type": "message", "room": room, "content": "hello", "clientId": "m-1"})
    frames = [c.expect("message", room=room) for c in (alice, bob, carol)]
    assert frames[0] == frames[1] == frames[2]
    data = frames[0]["data"]
    assert data["fromUser"] == alice.user_id and data["username"] == alice.username
    assert data["content"] == "hello" and data["clientId"] == "m-1" and data["room"] == room
    assert TIMESTAMP.match(data["timestamp"])
    rows = sql(database_url, "SELECT from_user, to_user, room, content FROM messages WHERE id = %s", (data["id"],))
    assert rows == [(alice.user_id, None, room, "hello")]


def test_order_is_id_order_for_every_receiver(connect):
    room = unique("room")
    senders = [connect() for _ in range(3)]
    listener = connect()
    for client in [*senders, listener]:
        join(client, room)
    for round_ in range(8):
        for index, sender in enumerate(senders):
            sender.send({"type": "message", "room": room, "content": f"{index}:{round_}"})
    ids = [listener.expect("message", room=room)["data"]["id"] for _ in range(24)]
    assert ids == sorted(ids) and len(set(ids)) == 24
    for sender in senders:
        assert [sender.expect("message", room=room)["data"]["id"] for _ in range(24)] == ids


def test_dm_reaches_recipient_tabs_and_senders_other_tabs(connect, database_url):
    alice, bob = connect(), connect()
    alice2 = connect(alice.user_id, alice.username)
    bob2 = connect(bob.user_id, bob.username)
    alice.send({"type": "dm", "to": bob.user_id, "content": "psst", "clientId": "d-1"})
    sent = alice.expect("dm_sent")
    message = sent["data"]["message"]
    assert sent["data"]["to"] == bob.user_id and sent["data"]["status"] == "ok"
    assert message["to"] == bob.user_id and message["fromUser"] == alice.user_id and message["content"] == "psst"
    for client in (bob, bob2, alice2):
        assert client.expect("dm")["data"] == message
    alice.nothing_more("dm", wait=0.5)
    assert sql(database_url, "SELECT to_user, room FROM messages WHERE id = %s", (message["id"],)) == [
        (bob.user_id, None)
    ]


def test_a_dm_lost_in_a_conversation_older_than_the_connection_is_filled_in(connect, database_url):
    """A connection learns its conversations' positions (last seq) but not their last
    message ids: a gap in one is filled from the right place, without loss or repeat."""
    alice_id, bob_id = new_user_id(), new_user_id()
    low, high = min(alice_id, bob_id), max(alice_id, bob_id)
    sql(
        database_url,
        "INSERT INTO users (id, username) VALUES (%s, %s), (%s, %s)",
        (alice_id, f"user{alice_id}", bob_id, f"user{bob_id}"),
    )
    for seq in (1, 2, 3):  # an old conversation, among other messages
        sql(
            database_url,
            "INSERT INTO messages (from_user, to_user, content, seq) VALUES (%s, %s, %s, %s)",
            (bob_id, alice_id, f"old {seq}", seq),
        )
        sql(database_url, "INSERT INTO messages (from_user, room, content) VALUES (%s, 'elsewhere', 'x')", (bob_id,))
    sql(database_url, "INSERT INTO dm_threads (user_low, user_high, last_seq) VALUES (%s, %s, 3)", (low, high))
    alice = connect(alice_id)
    # Committed by another process whose bus lost it:
    sql(database_url, "UPDATE dm_threads SET last_seq = 4 WHERE user_low = %s AND user_high = %s", (low, high))
    lost = sql(
        database_url,
        """INSERT INTO messages (from_user, to_user, content, seq)
                                 VALUES (%s, %s, 'lost', 4) RETURNING id""",
        (bob_id, alice_id),
    )[0][0]
    bob = connect(bob_id)
    bob.send({"type": "dm", "to": alice_id, "content": "live"})
    live = bob.expect("dm_sent")["data"]["message"]["id"]
    assert [alice.expect("dm")["data"]["id"] for _ in range(2)] == [lost, live]
    assert bob.expect("dm")["data"]["id"] == lost
    alice.nothing_more("dm", wait=0.5)


def test_dm_history_pages_and_catches_up(connect):
    alice, bob = connect(), connect()
    ids = []
    for index in range(5):
        alice.send({"type": "dm", "to": bob.user_id, "content": f"n{index}"})
        ids.append(alice.expect("dm_sent")["data"]["message"]["id"])
    bob.send({"type": "dm_history", "with": alice.user_id, "limit": 2})
    history = bob.expect("dm_history")
    assert history["with"] == alice.user_id
    assert [m["id"] for m in history["data"]] == ids[-2:]
    bob.send({"type": "dm_history", "with": alice.user_id, "before": ids[3], "limit": 2})
    assert [m["id"] for m in bob.expect("dm_history")["data"]] == ids[1:3]
    bob.send({"type": "dm_history", "with": alice.user_id, "after": ids[1]})
    assert [m["id"] for m in bob.expect("dm_history")["data"]] == ids[2:]
    # a third user cannot read the conversation: theirs with alice is empty
    carol = connect()
    carol.send({"type": "dm_history", "with": alice.user_id})
    assert carol.expect("dm_history")["data"] == []


def test_room_history_limit_before_after(connect):
    room = unique("room")
    alice = connect()
    join(alice, room)
    ids = []
    for index in range(7):
        alice.send({"type": "message", "room": room, "content": f"h{index}"})
        ids.append(alice.expect("message", room=room)["data"]["id"])
    alice.send({"type": "room_history", "room": room})
    history = alice.expect("room_history", room=room)
    assert [m["id"] for m in history["data"]] == ids
    assert history["data"][0]["content"] == "h0" and history["data"][0]["username"] == alice.username
    alice.send({"type": "room_history", "room": room, "limit": 3})
    assert [m["id"] for m in alice.expect("room_history")["data"]] == ids[-3:]
    alice.send({"type": "room_history", "room": room, "limit": 2, "before": ids[4]})
    assert [m["id"] for m in alice.expect("room_history")["data"]] == ids[2:4]
    alice.send({"type": "room_history", "room": room, "limit": 2, "after": ids[1]})
    assert [m["id"] for m in alice.expect("room_history")["data"]] == ids[2:4]
    alice.send({"type": "room_history", "room": room, "limit": 1000})
    assert len(alice.expect("room_history")["data"]) == 7


def test_history_limit_is_capped_at_200(connect, database_url):
    room = unique("room")
    alice = connect()
    join(alice, room)
    sql(
        database_url,
        "INSERT INTO messages (from_user, room, content) SELECT %s, %s, 'bulk ' || g FROM generate_series(1, 250) g",
        (alice.user_id, room),
    )
    alice.send({"type": "room_history", "room": room, "limit": 500})
    assert len(alice.expect("room_history")["data"]) == 200


def test_same_client_id_never_stores_twice(connect, database_url):
    room = unique("room")
    alice, bob = connect(), connect()
    join(alice, room)
    join(bob, room)
    alice.send({"type": "message", "room": room, "content": "once", "clientId": "same"})
    first = alice.expect("message", room=room)
    bob.expect("message", room=room)
    alice2 = connect(alice.user_id, alice.username)  # e.g. after a reconnect
    join(alice2, room)
    alice2.send({"type": "message", "room": room, "content": "once", "clientId": "same"})
    assert alice2.expect("message", room=room) == first
    bob.nothing_more("message", wait=0.5)
    alice.nothing_more("message", wait=0.1)
    alice.send({"type": "dm", "to": bob.user_id, "content": "dm once", "clientId": "same-dm"})
    sent = alice.expect("dm_sent")
    alice.send({"type": "dm", "to": bob.user_id, "content": "dm once", "clientId": "same-dm"})
    assert alice.expect("dm_sent") == sent
    bob.expect("dm")
    bob.nothing_more("dm", wait=0.5)
    count = sql(database_url, "SELECT count(*) FROM messages WHERE from_user = %s", (alice.user_id,))
    assert count == [(2,)]


def test_client_id_resent_as_the_other_kind_answers_with_what_is_stored(connect, database_url):
    room = unique("room")
    alice, bob = connect(), connect()
    join(alice, room)
    alice.send({"type": "message", "room": room, "content": "to the room", "clientId": "k1"})
    stored_message = alice.expect("message", room=room)
    alice.send({"type": "dm", "to": bob.user_id, "content": "as a dm", "clientId": "k1"})
    assert alice.expect("message", room=room) == stored_message
    alice.send({"type": "dm", "to": bob.user_id, "content": "a dm", "clientId": "k2"})
    stored_dm = alice.expect("dm_sent")
    alice.send({"type": "message", "room": room, "content": "as a message", "clientId": "k2"})
    assert alice.expect("dm_sent") == stored_dm
    alice.nothing_more("error", wait=0.3)
    count = sql(database_url, "SELECT count(*) FROM messages WHERE from_user = %s", (alice.user_id,))
    assert count == [(2,)]


def test_typing_goes_to_other_members_only(connect):
    room = unique("room")
    alice, bob = connect(), connect()
    join(alice, room)
    join(bob, room)
    alice.send({"type": "typing", "room": room})
    frame = bob.expect("typing")
    assert frame == {"type": "typing", "room": room, "data": {"userId": alice.user_id, "username": alice.username}}
    alice.nothing_more("typing", wait=0.4)


def test_rooms_lists_online_counts(connect):
    room = unique("room")
    alice, bob = connect(), connect()
    join(alice, room)
    join(bob, room)
    alice.send({"type": "rooms"})
    rooms = {r["name"]: r for r in alice.expect("rooms")["data"]}
    assert rooms[room] == {"name": room, "description": "", "online": 2, "members": 2, "private": False, "member": True}
    carol = connect()
    carol.send({"type": "rooms"})
    assert {r["name"]: r for r in carol.expect("rooms")["data"]}[room]["member"] is False


def test_rooms_finds_by_part_of_the_name_and_keeps_the_busiest_within_a_limit(connect):
    tag = unique("t")
    busy, quiet, other, secret = f"Lobby.{tag}", f"my-lobby.{tag}", f"Other.{tag}", f"lobby.{tag}.secret"
    alice, bob, carol = connect(), connect(), connect()
    for client, room in ((alice, busy), (bob, busy), (alice, quiet), (alice, other)):
        join(client, room)
    carol.send({"type": "create_room", "room": secret, "private": True})
    carol.expect("join_ack", room=secret)

    def found(client, **request) -> list[dict]:
        client.send({"type": "rooms", **request})
        return client.expect("rooms")["data"]

    # any case, anywhere in the name; a private room only to its members; in name order
    assert [room["name"] for room in found(alice, query=f"LOBBY.{tag}")] == [busy, quiet]
    assert found(alice, query=f"lobby.{tag}", limit=1) == [
        {"name": busy, "description": "", "online": 2, "members": 2, "private": False, "member": True}
    ]
    assert [(room["name"], room["private"]) for room in found(carol, query=tag)] == [
        (busy, False),
        (other, False),
        (secret, True),
        (quiet, False),
    ]
    assert found(bob, query=f"{tag}-nothing") == []
    assert len(found(alice, limit=1)) == 1


def test_a_room_frame_for_a_room_that_does_not_exist_is_not_found(connect):
    alice = connect()
    for frame in (
        {"type": "message", "room": unique("nowhere"), "content": "anyone?"},
        {"type": "leave", "room": unique("nowhere")},
        {"type": "typing", "room": unique("nowhere")},
    ):
        alice.send(frame)
        assert alice.expect_error("not_found")["room"] == frame["room"]
    alice.send({"type": "ping"})
    alice.expect("pong")


@pytest.mark.slow
def test_rooms_lists_the_most_crowded_when_there_are_too_many(fresh_database):
    srv = Server(fresh_database(), ROOMS_LIST_MAX="3").start()
    try:
        clients = [Client.connect(srv.url, make_token(new_user_id(), "crowd")) for _ in range(4)]
        for client in clients:
            client.expect("welcome")
        # room-a: 1 online, room-b: 3, room-c: 0 (left), room-d: 2, room-e: 1
        for room, members in (("room-e", 1), ("room-a", 1), ("room-b", 3), ("room-c", 1), ("room-d", 2)):
            for client in clients[:members]:
                join(client, room)
        clients[0].send({"type": "leave", "room": "room-c"})
        clients[0].expect("left", room="room-c")
        expected = [("room-a", 1), ("room-b", 3), ("room-d", 2)]

        def listed() -> list[tuple[str, int]]:
            clients[3].send({"type": "rooms"})
            return [(room["name"], room["online"]) for room in clients[3].expect("rooms")["data"]]

        # (the list is read at most once a second: until then an older one may come)
        wait_for(lambda: listed() == expected, 5, "the three most crowded rooms listed", pause=0.2)
    finally:
        srv.stop()


def test_ping_pong(connect):
    alice = connect()
    alice.send({"type": "ping"})
    assert alice.expect("pong") == {"type": "pong"}


def test_aliases_of_the_earlier_server(connect):
    room = unique("room")
    alice, bob = connect(), connect()
    alice.send({"type": "join_room", "room": room})
    alice.expect("join_ack", room=room)
    alice.send({"type": "room_message", "room": room, "content": "old style"})
    assert alice.expect("message")["data"]["content"] == "old style"
    alice.send({"type": "direct_message", "to_user_id": bob.user_id, "content": "old dm"})
    assert alice.expect("dm_sent")["data"]["message"]["content"] == "old dm"
    assert bob.expect("dm")["data"]["content"] == "old dm"


def test_join_with_since_replays_without_gap_or_duplicate_while_others_send(connect):
    room = unique("room")
    senders = [connect() for _ in range(3)]
    for sender in senders:
        join(sender, room)
    before = []
    for index in range(10):
        senders[0].send({"type": "message", "room": room, "content": f"old{index}"})
        before.append(senders[0].expect("message", room=room)["data"]["id"])
    since = before[3]
    # Others keep sending while the late joiner replays.
    for sender in senders[1:]:
        for index in range(10):
            sender.send({"type": "message", "room": room, "content": f"live{index}"})
    late = connect()
    join(late, room, since=since)
    for sender in senders[1:]:
        for index in range(10, 20):
            sender.send({"type": "message", "room": room, "content": f"live{index}"})
    expected_total = 6 + 40
    got = [late.expect("message", room=room)["data"]["id"] for _ in range(expected_total)]
    assert got == sorted(got) and len(set(got)) == len(got)
    assert got[:6] == before[4:]
    late.nothing_more("message", wait=0.5)
    # ... and they are exactly what is stored after `since`
    late.send({"type": "room_history", "room": room, "after": since, "limit": 200})
    assert [m["id"] for m in late.expect("room_history")["data"]] == got


def test_join_with_since_beyond_the_newest_message_misses_nothing_after_it(connect):
    """A `since` past the room's newest message (a database restored from a backup, a
    client's bug): what is sent after the join must all arrive, not only what gets an
    id beyond that `since`."""
    room = unique("room")
    sender = connect()
    join(sender, room)
    sender.send({"type": "message", "room": room, "content": "the newest"})
    newest = sender.expect("message", room=room)["data"]["id"]
    late = connect()
    join(late, room, since=newest + 5)
    for index in range(8):
        sender.send({"type": "message", "room": room, "content": f"after{index}"})
    got = [late.expect("message", room=room)["data"]["content"] for _ in range(8)]
    assert got == [f"after{index}" for index in range(8)]
    late.nothing_more("message", wait=0.3)


# --- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frame,code,word", BAD_FRAMES, ids=[f"{i}-{c}" for i, (_, c, _) in enumerate(BAD_FRAMES)])
def test_bad_frames_get_an_error_and_the_connection_stays_usable(connect, frame, code, word):
    alice = connect()
    alice.send(frame if isinstance(frame, str) else json.dumps(frame))  # raw: most are meant to break the schema
    error = alice.expect_error(code)
    assert word in error["message"], error
    alice.send({"type": "ping"})
    assert alice.expect("pong")


def test_binary_frame_is_bad_json(connect):
    alice = connect()
    alice.ws.send_binary(b"\x00\x01")
    alice.expect_error("bad_json")
    alice.send({"type": "ping"})
    alice.expect("pong")


def test_oversize_frame_closes_with_1009(connect):
    alice = connect()
    alice.send(json.dumps({"type": "message", "room": "x", "content": "y" * (70 * 1024)}))  # raw: meant to break it
    assert_closed_with(alice, 1009)


def test_rate_limit_answers_rate_limited_without_disconnecting(connect):
    alice = connect()
    for _ in range(45):
        alice.send({"type": "ping"})
    pongs = errors = 0
    for _ in range(45):
        frame = alice.recv_any()
        if frame["type"] == "pong":
            pongs += 1
        else:
            assert frame["code"] == "rate_limited"
            errors += 1
    assert 30 <= pongs < 45 and errors >= 1

    def answered_with_pong() -> bool:  # once the bucket has refilled (10 frames/s)
        alice.send({"type": "ping"})
        return alice.recv_any()["type"] == "pong"

    wait_for(answered_with_pong, 5, "a ping let through again", pause=0.05)


def test_many_frames_in_one_write_are_all_answered(connect):
    """Frames that arrive together are handled to the last one, even past the number a
    connection handles before giving others their turn."""
    alice = connect()
    frame = websocket.ABNF.create_frame(json.dumps({"type": "ping"}), websocket.ABNF.OPCODE_TEXT).format()
    alice.ws.sock.sendall(frame * 80)  # one write: the server reads them in one go
    answers = [alice.recv_any()["type"] for _ in range(80)]
    assert answers.count("pong") >= 30 and set(answers) <= {"pong", "error"}


@pytest.mark.slow
def test_rooms_auto_create_off_gives_not_found(database_url):
    srv = Server(database_url, ROOMS_AUTO_CREATE="false").start()
    try:
        client = Client.connect(srv.url, make_token(new_user_id()))
        client.expect("welcome")
        client.send({"type": "join", "room": unique("missing")})
        client.expect_error("not_found")
        sql(
            database_url,
            "INSERT INTO rooms (name, description) VALUES ('lobby-fixed', 'the lobby') ON CONFLICT DO NOTHING",
        )
        client.send({"type": "join", "room": "lobby-fixed"})
        client.expect("join_ack", room="lobby-fixed")
        client.close()
    finally:
        srv.stop()


def test_errors_name_the_request_they_answer(connect):
    alice, bob = connect(), connect()
    not_mine = unique("not-mine")
    join(bob, not_mine)
    alice.send({"type": "message", "room": not_mine, "content": "hi", "clientId": "c-77"})
    error = alice.expect_error("not_joined")
    assert (error["requestType"], error["room"], error["clientId"]) == ("message", not_mine, "c-77")
    assert error["data"]["clientId"] == "c-77"
    missing = new_user_id()
    alice.send({"type": "dm_history", "with": missing})
    error = alice.expect_error("not_found")
    assert (error["requestType"], error["with"], error["data"]["with"]) == ("dm_history", missing, missing)
    alice.send({"type": "direct_message", "to_user_id": str(missing), "content": "hi"})  # the earlier server's
    error = alice.expect_error("not_found")
    assert (error["requestType"], error["to"]) == ("direct_message", str(missing))
    alice.send(f'\n\t {{"type": "message", "room": "{not_mine}", "content": "hi", "clientId": "c-78"}}')
    assert alice.expect_error("not_joined")["clientId"] == "c-78"  # JSON may start with whitespace
    alice.send("not json at all")
    assert "requestType" not in alice.expect_error("bad_json")


def test_history_answers_echo_the_page_asked_for(connect):
    room = unique("room")
    alice, bob = connect(), connect()
    join(alice, room)
    alice.send({"type": "room_history", "room": room, "before": 10, "limit": 5})
    frame = alice.expect("room_history")
    assert (frame["room"], frame["before"], frame["limit"]) == (room, 10, 5) and "after" not in frame
    alice.send({"type": "dm_history", "with": bob.user_id, "after": 3})
    frame = alice.expect("dm_history")
    assert (frame["with"], frame["after"], frame["limit"]) == (bob.user_id, 3, 50)


def test_conversations_lists_dm_partners_latest_first(connect):
    alice, bob, carol = connect(), connect(), connect()
    alice.send({"type": "conversations"})
    assert alice.expect("conversations")["data"] == []
    bob.send({"type": "dm", "to": alice.user_id, "content": "first"})
    bob.expect("dm_sent")
    carol.send({"type": "dm", "to": alice.user_id, "content": "second"})
    last = carol.expect("dm_sent")["data"]["message"]["id"]
    alice.send({"type": "conversations"})
    unread = {"lastReadId": 0, "unread": 1, "mentions": 0}
    assert alice.expect("conversations")["data"] == [
        {"userId": carol.user_id, "username": carol.username, "lastId": last, **unread},
        {"userId": bob.user_id, "username": bob.username, "lastId": last - 1, **unread},
    ]


def test_conversations_come_in_pages_latest_first(connect, database_url):
    alice = connect()
    partners = [new_user_id() for _ in range(5)]
    for partner in partners:
        sql(database_url, "INSERT INTO users (id, username) VALUES (%s, %s)", (partner, f"p{partner}"))
        alice.send({"type": "dm", "to": partner, "content": "hello"})
        alice.expect("dm_sent")
    latest_first = [{"userId": p, "username": f"p{p}"} for p in reversed(partners)]

    def page(**bounds) -> list[dict]:
        alice.send({"type": "conversations", **bounds})
        return [{"userId": c["userId"], "username": c["username"]} for c in alice.expect("conversations")["data"]]

    assert page() == latest_first
    assert page(limit=2) == latest_first[:2]
    assert page(limit=2, offset=2) == latest_first[2:4]
    assert page(limit=2, offset=4) == latest_first[4:]
    assert page(offset=5) == []
    for bad in ({"limit": 0}, {"limit": "10"}, {"limit": 2.5}, {"offset": -1}, {"offset": "x"}):
        alice.send(json.dumps({"type": "conversations", **bad}))  # raw: refused by design
        assert alice.expect_error("invalid")["requestType"] == "conversations"
    assert page(limit=1) == latest_first[:1]  # still usable


@pytest.mark.slow
def test_a_room_that_heard_a_join_hears_the_leave_even_once_crowded(database_url):
    """Nobody keeps seeing online a user whose join reached them before the room grew
    too crowded for presence; the joins and leaves of the crowd stay unannounced."""
    srv = Server(database_url, PRESENCE_MAX_ROOM_SIZE="2").start()
    try:
        room = unique("grown")
        first, early, crowd = (Client.connect(srv.url, make_token(new_user_id())) for _ in range(3))
        early_id = early.expect("welcome")["data"]["userId"]
        for client in (first, crowd):
            client.expect("welcome")
        join(first, room)
        join(early, room)
        assert first.expect("presence", room=room)["data"]["event"] == "join"
        join(crowd, room)  # three online: a crowd, whose joins and leaves go unannounced
        early.send({"type": "leave", "room": room})
        early.expect("left", room=room)
        gone = first.expect("presence", room=room)["data"]
        assert (gone["event"], gone["userId"]) == ("leave", early_id)
        first.nothing_more("presence", wait=0.5)  # nothing of the crowd's join
        for client in (first, early, crowd):
            client.close()
    finally:
        srv.stop()


@pytest.mark.slow
def test_crowded_rooms_list_some_users_and_announce_no_presence(database_url):
    srv = Server(database_url, JOIN_ACK_MAX_USERS="2", PRESENCE_MAX_ROOM_SIZE="2").start()
    try:
        room = unique("crowd")
        clients = {}  # user id -> client
        for _ in range(4):
            user_id = new_user_id()
            client = Client.connect(srv.url, make_token(user_id))
            client.expect("welcome")
            clients[user_id] = client
            ack = join(client, room)
        assert ack["data"]["online"] == 4 and len(ack["data"]["users"]) == 2
        # the second joiner was announced (2 online), the third and fourth were not
        first = next(iter(clients.values()))
        assert first.expect("presence", room=room)["data"]["event"] == "join"
        first.nothing_more("presence", wait=0.5)
        # a listed user leaves: the next joiner's list moves up, without them
        first_listed = ack["data"]["users"][0]["userId"]
        leaver = clients[first_listed]
        leaver.send({"type": "leave", "room": room})
        leaver.expect("left", room=room)
        late_id = new_user_id()
        clients[late_id] = Client.connect(srv.url, make_token(late_id))
        clients[late_id].expect("welcome")
        ack = join(clients[late_id], room)
        listed = [user["userId"] for user in ack["data"]["users"]]
        assert ack["data"]["online"] == 4 and len(listed) == 2 and first_listed not in listed
        for client in clients.values():
            client.close()
    finally:
        srv.stop()
