"""Faults survived: restarts of the server and of PostgreSQL, slow and dead clients."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from functools import partial

import psycopg2
import pytest
import websocket

from tests.support.asyncapi import check_server_frame
from tests.support.clients import Client, assert_closed_with, connect_to, join, join_new_clients
from tests.support.databases import seed_room, sql
from tests.support.faults import FaultPhases, is_ack_of, send_until_acked, server_through_outages
from tests.support.identities import make_token, new_user_id, unique
from tests.support.servers import Server
from tests.support.waiting import wait_for

# Every test here starts its own server and waits a fault out: seconds each.
pytestmark = pytest.mark.slow


def test_shutdown_closes_with_1001_and_messages_survive_a_restart(database_url):
    srv = Server(database_url).start()
    room = unique("room")
    alice = connect_to(srv)
    join(alice, room)
    sent = []
    for index in range(5):
        alice.send({"type": "message", "room": room, "content": f"keep {index}"})
        sent.append(alice.expect("message", room=room)["data"])
    srv.stop()  # SIGTERM
    assert_closed_with(alice, 1001)
    srv.start()  # same port, same database
    try:
        bob = connect_to(srv)
        bob.send({"type": "room_history", "room": room})
        assert bob.expect("room_history")["data"] == sent
        join(bob, room, since=sent[1]["id"])
        assert [bob.expect("message", room=room)["data"] for _ in range(3)] == sent[2:]
    finally:
        srv.stop()


# A 4 KB receive buffer, which a few frames fill: the server's sends to a client that
# reads slowly, or not at all, back up at once rather than after the kernel's default
# (about 128 KB, and growing with use).
SMALL_RECEIVE_BUFFER = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)]


def connect_slow_reader(srv: Server) -> Client:
    """A new user's client with a SMALL_RECEIVE_BUFFER and its welcome read, to read slowly or never."""
    reader = Client.connect(srv.url, make_token(new_user_id(), "reader"), sockopt=SMALL_RECEIVE_BUFFER)
    reader.expect("welcome")
    return reader


@pytest.mark.parametrize(
    "limit",
    # 150 frames of ~3.9 KB each: past 40 frames, or past 100 KB
    [{"OUTBOX_MAX_FRAMES": "40"}, {"OUTBOX_MAX_BYTES": "100000"}],
    ids=["frames", "bytes"],
)
def test_a_slow_reader_is_closed_with_1008_and_does_not_slow_its_room(database_url, limit):
    srv = Server(
        database_url,
        **limit,
        SOCKET_SEND_BUFFER_BYTES="16384",
        RATE_BURST_FRAMES="500",
        RATE_FRAMES_PER_SECOND="500",
    ).start()
    try:
        room = unique("room")
        slow = connect_slow_reader(srv)  # and then it reads nothing
        join(slow, room)
        fast, sender = connect_to(srv), connect_to(srv)
        join(fast, room)
        join(sender, room)
        content = "x" * 3900
        received, echoed = [], []

        def read(client: Client, into: list) -> None:
            for _ in range(150):
                into.append(client.expect("message", room=room))

        reader = threading.Thread(target=read, args=(fast, received))
        reader.start()
        # The sender reads its own echoes too (else it would be the slow one).
        echoes = threading.Thread(target=read, args=(sender, echoed))
        echoes.start()
        for index in range(150):
            sender.send({"type": "message", "room": room, "content": f"{index} {content}"})
            if index % 10 == 9:
                # Paced by the clients that read, so that only the one reading nothing
                # falls behind (the test's reader threads can be slower than the server).
                wait_for(lambda floor=index - 10: min(len(received), len(echoed)) > floor, 10, "the readers keeping up")
        # The room keeps flowing for the members that read.
        reader.join(30)
        echoes.join(30)
        assert [m["data"]["content"].split()[0] for m in received] == [str(i) for i in range(150)]
        # The slow one, reading at last, finds a close frame with 1008 after its backlog.
        slow.ws.settimeout(10)
        while True:
            opcode, data = slow.ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                assert int.from_bytes(data[:2], "big") == 1008
                break
        assert "reads too slowly" in srv.log()
    finally:
        srv.stop()


def test_a_peer_that_stops_answering_pings_is_dropped(database_url):
    srv = Server(database_url, PING_INTERVAL_SECONDS="0.5", PONG_TIMEOUT_SECONDS="0.5").start()
    try:
        room = unique("room")
        alice = connect_to(srv)
        join(alice, room)
        # websocket-client answers pings only while reading: this one stops reading.
        silent = connect_to(srv)
        join(silent, room)
        alice.expect("presence", room=room, event="join")
        deadline = time.monotonic() + 10
        left = None
        while left is None and time.monotonic() < deadline:
            alice.send({"type": "ping"})  # alice reads, so alice answers pings
            alice.expect("pong")
            try:
                left = alice.expect("presence", room=room, event="leave", timeout=0.5)
            except TimeoutError:
                pass
        assert left is not None and left["data"]["userId"] == silent.user_id
        assert "no answer to a ping" in srv.log()
    finally:
        srv.stop()


def health(srv: Server) -> int:
    try:
        with urllib.request.urlopen(srv.http + "/healthz", timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_database_restart_during_traffic_loses_nothing_and_recovers_by_itself(embedded_postgres):
    with server_through_outages(embedded_postgres) as (url, srv):
        room = unique("room")
        listener, *senders = join_new_clients(srv, room, 1 + 3)
        acked: dict[str, dict] = {}
        refusals = []
        per_sender = 40
        phases = FaultPhases(len(senders))
        health_during_outage = []

        def send_all(index: int, sender: Client) -> None:
            deadline = time.monotonic() + 60
            for n in range(per_sender):
                if n == per_sender // 2:
                    phases.at_halfway()
                client_id = f"s{index}-{n}"
                reply, unavailable = send_until_acked(
                    sender,
                    {"type": "message", "room": room, "content": f"m {client_id}", "clientId": client_id},
                    partial(is_ack_of, client_id=client_id),
                    phases,
                    index,
                    deadline,
                )
                acked[client_id] = reply["data"]
                refusals.append(unavailable)

        def restart_database() -> None:
            phases.run(
                embedded_postgres.stop,
                embedded_postgres.start,
                during=lambda: health_during_outage.append(health(srv)),
            )

        threads = [threading.Thread(target=send_all, args=(i, s)) for i, s in enumerate(senders)]
        threads.append(threading.Thread(target=restart_database))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        assert phases.over.is_set()
        assert health_during_outage == [503]
        assert sum(refusals) > 0, "the outage should have refused some sends"
        assert len(acked) == 3 * per_sender
        # Every acknowledged message is stored once...
        stored = sql(url, "SELECT client_id, count(*) FROM messages WHERE room = %s GROUP BY client_id", (room,))
        assert dict(stored) == {client_id: 1 for client_id in acked}
        # ... and the listener that stayed joined received each exactly once, in id order.
        received = [listener.expect("message", room=room, timeout=15)["data"] for _ in range(len(acked))]
        listener.nothing_more("message", wait=1.0)
        ids = [m["id"] for m in received]
        assert ids == sorted(ids)
        assert {m["clientId"] for m in received} == set(acked)
        assert health(srv) == 200


def test_a_message_told_unavailable_is_never_stored_afterwards(database_url):
    """A batch that outlasts its senders' wait (the room's row locked by a long transaction
    elsewhere) is cancelled: a sender told `unavailable` may send again, without a
    clientId as another message, so the first must not turn up later as well."""
    srv = Server(database_url, STORE_TIMEOUT_SECONDS="1").start()
    blocker = psycopg2.connect(database_url)
    try:
        room = unique("locked")
        alice = connect_to(srv)
        join(alice, room)
        with blocker.cursor() as cur:
            cur.execute("SELECT 1 FROM rooms WHERE name = %s FOR UPDATE", (room,))
        alice.send({"type": "message", "room": room, "content": "first try"})
        # (answered once PostgreSQL cancelled the batch: the lock outlived the statement)
        assert "nothing was stored" in alice.expect_error("unavailable")["message"]
        blocker.rollback()
        alice.nothing_more("message", wait=1.0)
        assert sql(database_url, "SELECT count(*) FROM messages WHERE room = %s", (room,)) == [(0,)]
        alice.send({"type": "message", "room": room, "content": "second try"})
        assert alice.expect("message", room=room)["data"]["content"] == "second try"
        assert sql(database_url, "SELECT content FROM messages WHERE room = %s", (room,)) == [("second try",)]
    finally:
        blocker.close()
        srv.stop()


# A replay of the BACKLOG in pages of 100 through a 4 KB send buffer: it lasts seconds,
# long enough for pings, and live messages, to come meanwhile.
BACKLOG = 3000
SLOW_REPLAY_ENV = {"REPLAY_PAGE_SIZE": "100", "SOCKET_SEND_BUFFER_BYTES": "4096"}


def test_a_long_replay_to_a_slow_reader_is_not_cut_by_the_keepalive(database_url):
    """Nothing reads a connection while its replay runs, so the client's answers to pings
    wait unread: a replay that outlasts the ping interval and pong timeout must not be
    taken for a dead client while the client takes what is sent."""
    srv = Server(
        database_url,
        PING_INTERVAL_SECONDS="0.5",
        PONG_TIMEOUT_SECONDS="0.5",
        **SLOW_REPLAY_ENV,
    ).start()
    try:
        room = unique("backlog")
        seed_room(database_url, room, BACKLOG)
        reader = connect_slow_reader(srv)
        join(reader, room, since=0)
        contents = []
        while len(contents) < BACKLOG:
            contents.append(reader.expect("message", room=room)["data"]["content"])
            if len(contents) % 100 == 0:
                time.sleep(0.1)  # a slow link: the replay takes about 3 s
        assert contents == [f"old {n}" for n in range(1, BACKLOG + 1)]
        reader.send({"type": "ping"})
        reader.expect("pong")
    finally:
        srv.stop()


def test_a_steady_but_slow_reader_closed_mid_frame_still_gets_1008(database_url):
    """Its queue overflows while a large frame is half-way out: the frame cannot be cut
    short, so the close frame waits for it, long enough for a slow link to take it."""
    srv = Server(
        database_url, OUTBOX_MAX_BYTES=str(1 << 20), CLOSE_TIMEOUT_SECONDS="0.5", SOCKET_SEND_BUFFER_BYTES="16384"
    ).start()
    try:
        room = unique("big")
        seed_room(database_url, room, 100, content_bytes=4000)  # a history of 400 KB
        slow = connect_slow_reader(srv).ws
        for _ in range(6):  # six answers of 400 KB: past the 1 MiB the server queues
            slow.send(json.dumps({"type": "room_history", "room": room, "limit": 100}))
        received = bytearray()
        slow.sock.settimeout(10)
        while chunk := slow.sock.recv(8192):  # about 100 KB/s: a slow link
            received += chunk
            time.sleep(0.08)
        close_frame = b"\x88" + bytes([2 + len(b"too slow: outgoing queue overflowed")]) + (1008).to_bytes(2, "big")
        assert received.endswith(close_frame + b"too slow: outgoing queue overflowed")
    finally:
        srv.stop()


class Flood:
    """Sends one kind of tiny masked frame as fast as the socket takes it, from an OS
    thread, until stopped or the server ends the connection."""

    def __init__(self, ws: websocket.WebSocket, frame: bytes) -> None:
        self.sock = ws.sock
        self.chunk = frame * (1 << 17)
        self.stopped = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stopped.is_set():
                self.sock.sendall(self.chunk)
                self.sent += len(self.chunk)
        except OSError:
            pass  # ended by the server

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(10)


MASK = b"\x00\x00\x00\x00"
TINY_FRAMES = {
    # an unsolicited pong: nothing to answer
    "pongs": b"\x8a\x80" + MASK,
    # empty fragments of a message that never ends
    "fragments": b"\x00\x80" + MASK,
}


@pytest.mark.parametrize("frame", TINY_FRAMES.values(), ids=TINY_FRAMES)
@pytest.mark.parametrize("authenticated", [True, False], ids=["authenticated", "before auth"])
def test_a_flood_of_tiny_frames_does_not_stop_the_worker(database_url, frame, authenticated):
    """Frames that are not messages cost the worker more to parse than the client to
    send: read without a pause, they held the event loop (and the first-frame auth's
    timeout) for as long as the flood went on, until gunicorn killed the worker with
    every connection on it. The others must be served meanwhile."""
    srv = Server(database_url, AUTH_TIMEOUT_SECONDS="3").start()
    flood = None
    try:
        other = connect_to(srv)
        flooder = websocket.WebSocket()
        token = f"?token={make_token(new_user_id())}" if authenticated else ""
        flooder.connect(f"{srv.url}/ws{token}", timeout=10)
        if authenticated:
            assert check_server_frame(json.loads(flooder.recv()))["type"] == "welcome"
        if frame[0] == 0x00:
            flooder.sock.sendall(b"\x01\x80" + MASK)  # the first fragment of a text message
        flood = Flood(flooder, frame)
        wait_for(lambda: flood.sent > 2_000_000, 10, "the flood under way")
        for _ in range(3):
            other.send({"type": "ping"})
            other.expect("pong", timeout=5)
        if not authenticated:
            flood.thread.join(20)  # the auth timeout ends it, flood or not
            assert not flood.thread.is_alive()
    finally:
        if flood:
            flood.stop()
        srv.stop()
    assert "WORKER TIMEOUT" not in srv.log()


class Pongs:
    """Sends an unsolicited pong every `interval` seconds, from an OS thread, until the
    server ends the connection (then `ended` is set) or it is stopped."""

    def __init__(self, ws: websocket.WebSocket, interval: float) -> None:
        self.sock = ws.sock
        self.interval = interval
        self.stopped = threading.Event()
        self.ended = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stopped.wait(self.interval):
                self.sock.sendall(b"\x8a\x80" + MASK)
        except OSError:
            self.ended.set()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(10)


def test_a_client_that_reads_nothing_is_dropped_however_much_it_sends(database_url):
    """Any frame from the client counts as a sign of life; one that keeps sending pongs
    but never reads held its queue (a 400 KB answer here) for good. Closed after the
    pong timeout without progress; a client that reads stays."""
    srv = Server(
        database_url, PING_INTERVAL_SECONDS="0.5", PONG_TIMEOUT_SECONDS="1", SOCKET_SEND_BUFFER_BYTES="16384"
    ).start()
    pongs = None
    try:
        room = unique("big")
        seed_room(database_url, room, 100, content_bytes=4000)  # a history of 400 KB
        alice = connect_to(srv)
        hoarder = connect_slow_reader(srv).ws
        hoarder.send(json.dumps({"type": "room_history", "room": room, "limit": 100}))
        pongs = Pongs(hoarder, 0.2)  # more often than the ping interval: never pinged
        deadline = time.monotonic() + 15
        while not pongs.ended.is_set() and time.monotonic() < deadline:
            alice.send({"type": "ping"})  # alice reads, so alice answers pings
            alice.expect("pong")
            pongs.ended.wait(0.2)
        assert pongs.ended.is_set(), "the client that reads nothing is still connected"
        assert "read nothing" in srv.log()
        alice.send({"type": "ping"})
        alice.expect("pong")
    finally:
        if pongs:
            pongs.stop()
        srv.stop()


def test_live_messages_held_back_by_a_replay_count_toward_the_outbox_limit(database_url):
    """A `since` replay holds the room's live messages back until it is sent; in a busy
    room, to a client that does not read, they piled up with no limit."""
    srv = Server(
        database_url,
        OUTBOX_MAX_BYTES="200000",
        RATE_BURST_FRAMES="500",
        RATE_FRAMES_PER_SECOND="500",
        **SLOW_REPLAY_ENV,
    ).start()
    try:
        room = unique("busy")
        seed_room(database_url, room, BACKLOG)
        sender = connect_to(srv)
        join(sender, room)
        reader = connect_slow_reader(srv)
        join(reader, room, since=0)  # then it reads nothing: the replay waits
        for index in range(60):  # 240 KB of live messages, held back for the reader
            sender.send({"type": "message", "room": room, "content": f"{index} " + "z" * 3990})
            sender.expect("message", room=room)
        wait_for(lambda: "reads too slowly" in srv.log(), 10, "the reader closed as too slow")
        reader.ws.settimeout(10)
        while True:
            opcode, data = reader.ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                assert int.from_bytes(data[:2], "big") == 1008
                break
    finally:
        srv.stop()


def test_a_first_connection_while_the_database_is_down_is_refused_before_the_upgrade(embedded_postgres):
    """The worker makes its chat runtime at its first WebSocket, and that needs the
    database: when it cannot, the client gets a 503 it can read and retry on, not a 101
    followed by an HTTP error page written into its WebSocket stream."""
    url = embedded_postgres.start()
    srv = Server(url, DB_CONNECT_TIMEOUT_SECONDS="1").start()
    try:
        embedded_postgres.stop()
        token = make_token(new_user_id(), "early")
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            Client.connect(srv.url, token)
        assert refused.value.status_code == 503
        embedded_postgres.start()
        client = Client.connect(srv.url, token)  # the next connection makes the runtime
        client.expect("welcome")
    finally:
        srv.stop()


def test_a_connection_whose_rooms_cannot_be_listed_is_closed_with_1013_not_greeted_with_none(embedded_postgres):
    """A `welcome` with `rooms: []` while the database is down would tell a client it is in no
    room, and it would empty its sidebar: it is closed with 1013 (try again later) instead,
    and greeted with its rooms once the database is back."""
    url = embedded_postgres.start()
    srv = Server(url, DB_CONNECT_TIMEOUT_SECONDS="1", HEARTBEAT_SECONDS="0.5").start()
    try:
        room = unique("room")
        user_id = new_user_id()
        first = connect_to(srv, user_id)
        join(first, room)
        first.close()
        embedded_postgres.stop()
        for path in ("/ws", "/"):  # the compatibility endpoint too: its client reconnects on any close but 1000
            refused = Client.connect(srv.url, make_token(user_id, f"user{user_id}"), path=path)
            assert_closed_with(refused, 1013)
        embedded_postgres.start()
        again = wait_for(lambda: try_welcome(srv, user_id), timeout=30, what="a welcome once the database is back")
        assert [r["room"] for r in again["data"]["rooms"]] == [room]
    finally:
        srv.stop()


def try_welcome(srv: Server, user_id: int) -> dict | None:
    """The welcome of a new connection of the user, or None when it was closed instead."""
    client = Client.connect(srv.url, make_token(user_id, f"user{user_id}"))
    try:
        opcode, data = client.ws.recv_data(control_frame=True)
    finally:
        client.close()
    if opcode == websocket.ABNF.OPCODE_CLOSE:
        return None
    return check_server_frame(json.loads(data))


def test_a_join_behind_a_lock_that_is_never_released_is_told_unavailable_and_can_retry(database_url):
    # The (room, user) lock a join takes, held by a transaction that does not end: a node
    # frozen mid-join, its host paused. Without a statement timeout on the pool, the join
    # would wait for as long as that transaction lives, and hold a pool connection meanwhile.
    srv = Server(database_url, DB_STATEMENT_TIMEOUT_SECONDS="1").start()
    room = unique("room")
    holder = psycopg2.connect(database_url)
    try:
        alice = connect_to(srv)
        join(alice, room)
        bob = connect_to(srv)
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"presence:{room}:{bob.user_id}",))

        bob.send({"type": "join", "room": room})
        bob.expect_error("unavailable", timeout=5)  # the lock is still held: the timeout told it
        member = "SELECT 1 FROM chat_members WHERE room = %s AND user_id = %s"
        assert sql(database_url, member, (room, bob.user_id)) == []  # no half-member
        bob.send({"type": "rooms"})  # the connection serves on
        bob.expect("rooms")

        holder.rollback()
        join(bob, room)
        bob.send({"type": "message", "room": room, "content": "in at last"})
        assert alice.expect("message", room=room)["data"]["content"] == "in at last"
    finally:
        holder.close()
        srv.stop()
