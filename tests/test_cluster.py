"""Scale-out: two server instances ("hosts") of two workers each, sharing one PostgreSQL.

Every check of the single-server tests must hold across processes: delivery, order,
presence, typing, DMs, idempotency and replay; then with workers killed and the bus's
engine restarted during traffic.
"""

from __future__ import annotations

import json
import os
import select
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import psycopg2
import pytest
import redis

from app.bus import redis_channel
from tests.support.clients import Client, connect_to, join
from tests.support.cluster import CLUSTER_ENV, start_cluster
from tests.support.databases import sql
from tests.support.faults import FaultPhases, StallingProxy, is_ack_of, send_until_acked
from tests.support.identities import SECRET, make_token, new_user_id, unique
from tests.support.restartable import PrivateRedis
from tests.support.servers import Server
from tests.support.waiting import wait_for

# Every test here runs two or more server instances over a bus: `-m "not cluster"` leaves them out.
pytestmark = pytest.mark.cluster


def spread(servers: list[Server], count: int) -> list[Client]:
    """`count` clients, alternating between the instances (and so over their workers)."""
    return [connect_to(servers[index % len(servers)]) for index in range(count)]


def test_room_messages_reach_every_member_once_in_the_same_order(cluster):
    room = unique("room")
    clients = spread(cluster, 8)
    for client in clients:
        join(client, room)
    per_sender = 6
    threads = [
        threading.Thread(
            target=lambda c=c: [
                c.send({"type": "message", "room": room, "content": f"{c.user_id}:{n}"}) for n in range(per_sender)
            ]
        )
        for c in clients
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = per_sender * len(clients)
    orders = [[c.expect("message", room=room, timeout=15)["data"]["id"] for _ in range(total)] for c in clients]
    assert orders[0] == sorted(orders[0]) and len(set(orders[0])) == total
    assert all(order == orders[0] for order in orders)
    for client in clients:
        client.nothing_more("message", wait=0.3)


def test_presence_join_ack_rooms_and_typing_are_cluster_wide(cluster):
    room = unique("room")
    alice = connect_to(cluster[0])
    bob_first = connect_to(cluster[1])
    join(alice, room)
    ack = join(bob_first, room)
    assert {u["userId"] for u in ack["data"]["users"]} == {alice.user_id, bob_first.user_id}
    assert alice.expect("presence", room=room, event="join")["data"]["userId"] == bob_first.user_id
    # bob's second tab, on the other instance: no second presence event
    bob_second = connect_to(cluster[0], bob_first.user_id)
    join(bob_second, room)
    alice.nothing_more("presence", wait=0.8)
    alice.send({"type": "rooms"})
    counts = {r["name"]: r["online"] for r in alice.expect("rooms")["data"]}
    assert counts[room] == 2
    alice.send({"type": "typing", "room": room})
    assert bob_first.expect("typing", room=room)["data"]["userId"] == alice.user_id
    assert bob_second.expect("typing", room=room)["data"]["userId"] == alice.user_id
    # closing one of bob's tabs: still online; closing the last: leave
    bob_first.close()
    alice.nothing_more("presence", wait=0.8)
    bob_second.send({"type": "leave", "room": room})
    assert alice.expect("presence", room=room, event="leave")["data"]["userId"] == bob_first.user_id


def test_a_crowd_joining_one_room_on_every_worker_at_once_is_counted_and_announced_once_each(cluster):
    """First joins arriving together are written many a statement on each worker
    (presence.Joins) while the other workers write theirs: every joiner is a member, a
    watcher hears each join once, and the room's counts say all of them."""
    room = unique("room")
    watcher = connect_to(cluster[0])
    join(watcher, room)
    crowd = spread(cluster, 24)
    sends = [threading.Thread(target=c.send, args=({"type": "join", "room": room},)) for c in crowd]
    for thread in sends:
        thread.start()
    for thread in sends:
        thread.join()
    acks = [c.expect("join_ack", room=room, timeout=20) for c in crowd]
    heard = [watcher.expect("presence", room=room, event="join", timeout=20)["data"]["userId"] for _ in crowd]
    assert sorted(heard) == sorted(c.user_id for c in crowd)
    watcher.nothing_more("presence", wait=0.5)
    # (each counts the members its statement saw: the other workers' may still be committing)
    assert all(2 <= ack["data"]["members"] <= len(crowd) + 1 for ack in acks)
    watcher.send({"type": "rooms"})
    listed = next(r for r in watcher.expect("rooms")["data"] if r["name"] == room)
    assert (listed["online"], listed["members"]) == (len(crowd) + 1, len(crowd) + 1)


@contextmanager
def second_behind_a_proxy(database_url: str, bus: PrivateRedis) -> Iterator[tuple[str, Server, Server, StallingProxy]]:
    """Two nodes on Redis, the second's link to it through a proxy the test can stall or
    cut: (database url, first, second, proxy)."""
    proxy = StallingProxy(bus.port)
    env = {**CLUSTER_ENV, "CHAT_BUS": "redis"}
    first = Server(database_url, REDIS_URL=bus.url, **env).start()
    second = Server(database_url, REDIS_URL=f"redis://127.0.0.1:{proxy.port}/0", **env).start()
    try:
        yield database_url, first, second, proxy
    finally:
        first.stop()
        second.stop()
        proxy.close()


def joined_and_heard(watching: Server, joining: Server, room: str) -> tuple[Client, Client]:
    """New clients of `watching` and `joining` in `room`, once the first has heard the second join.

    On two nodes, the join heard also tells that they hear each other on the bus.
    """
    watcher = connect_to(watching)
    join(watcher, room)
    joiner = connect_to(joining)
    join(joiner, room)
    assert watcher.expect("presence", room=room, event="join")["data"]["userId"] == joiner.user_id
    return watcher, joiner


def test_a_users_leave_heard_after_their_next_join_does_not_undo_it(fresh_database, private_redis):
    """Bob's page reloads onto another node: his leave on the first node is committed
    before his join on the second, but each node announces its own. Where the leave
    arrives second (here the second node's link to Redis stalls meanwhile, so it hears
    the leave only after delivering its own join), Bob must not be shown gone. (Alice,
    on the second node, heard neither: to her he never left.)"""
    with second_behind_a_proxy(fresh_database(), private_redis) as (database_url, first, second, proxy):
        room = unique("reload")
        alice, bob = joined_and_heard(second, first, room)
        proxy.stall()
        bob.close()
        bobs_row = "SELECT 1 FROM room_presence WHERE room = %s AND user_id = %s"
        wait_for(lambda: not sql(database_url, bobs_row, (room, bob.user_id)), 10, "bob's leave committed")
        bob_again = connect_to(second, bob.user_id)
        join(bob_again, room)
        # His row on the second node is committed, and its join announced there (not to
        # Alice, who has him online), before that node hears the leave. (The row is written
        # after his welcome, when the worker has a moment: Presence.Tends.)
        wait_for(lambda: sql(database_url, bobs_row, (room, bob.user_id)), 10, "bob's join committed")
        proxy.resume()
        alice.nothing_more("presence", wait=1.5)
        carol = connect_to(second)
        assert bob.user_id in {user["userId"] for user in join(carol, room)["data"]["users"]}


def test_a_join_the_first_read_of_a_room_holds_before_its_event_arrives_is_still_told(fresh_database, private_redis):
    """Alice, a member, reconnects to the second node, which never served her room, while
    its link to Redis stalls: Bob's join on the first node is committed, its event held
    up, and her connection's presence row reads the room's first list there, which holds
    him. The shipped client never sends `join` after a reconnect (LEGACY-CLIENT.md): the
    event, when it comes, is all she is told of Bob, and must reach her, once."""
    with second_behind_a_proxy(fresh_database(), private_redis) as (database_url, first, second, proxy):
        room, warm = unique("first-read"), unique("warm")
        # both nodes up and hearing each other (a node alone announces nothing)
        joined_and_heard(second, first, warm)
        alice = connect_to(first)
        join(alice, room)  # a member, on the first node only
        alice.close()
        row = "SELECT 1 FROM room_presence WHERE room = %s AND user_id = %s"
        wait_for(lambda: not sql(database_url, row, (room, alice.user_id)), 10, "alice gone from the room")
        proxy.stall()
        bob = connect_to(first)
        join(bob, room)
        wait_for(lambda: sql(database_url, row, (room, bob.user_id)), 10, "bob's join committed")
        back = connect_to(second, alice.user_id)  # in the room from its welcome on, no join
        # her row is written after the room's first list is read on the second node
        wait_for(lambda: sql(database_url, row, (room, alice.user_id)), 10, "the first read done")
        proxy.resume()
        assert back.expect("presence", room=room, event="join", timeout=15)["data"]["userId"] == bob.user_id
        back.nothing_more("presence", wait=1.0)


def test_joins_and_leaves_lost_with_the_bus_are_told_once_it_is_back(fresh_database, private_redis):
    """The second node's link to Redis is cut while Bob leaves and Carol joins on the
    first: pub/sub keeps nothing for a subscriber that is away, so those events never
    reach the second node. Once its listener is back, Alice (there) must be told both,
    once each."""
    with second_behind_a_proxy(fresh_database(), private_redis) as (database_url, first, second, proxy):
        room = unique("partition")
        alice, bob = joined_and_heard(second, first, room)
        proxy.cut()
        bob.send({"type": "leave", "room": room})
        bob.expect("left", room=room)
        carol = connect_to(first)
        join(carol, room)
        online = "SELECT user_id FROM room_presence WHERE room = %s ORDER BY user_id"
        rows = sorted([(alice.user_id,), (carol.user_id,)])
        wait_for(lambda: sql(database_url, online, (room,)) == rows, 10, "the leave and the join committed")
        proxy.resume()
        told = [alice.expect("presence", room=room, timeout=15)["data"] for _ in range(2)]
        assert {(e["event"], e["userId"]) for e in told} == {("leave", bob.user_id), ("join", carol.user_id)}
        # the second node's clients are told nothing twice, and its list is right
        alice.nothing_more("presence", wait=1.0)
        dave = connect_to(second)
        assert {u["userId"] for u in join(dave, room)["data"]["users"]} == {alice.user_id, carol.user_id, dave.user_id}


def grown_crowded(servers: list[Server], watcher_at: int, early_at: int) -> tuple[str, Client, Client]:
    """A room (of a cluster with PRESENCE_MAX_ROOM_SIZE=2) where the watcher heard the
    early user's join, then grown too crowded for presence by a third user (who joins
    at the watcher's instance, unannounced): (room, watcher, early)."""
    room = unique("grown")
    watcher, early = joined_and_heard(servers[watcher_at], servers[early_at], room)
    join(connect_to(servers[watcher_at]), room)
    return room, watcher, early


def test_a_join_heard_before_the_room_grew_crowded_has_its_leave_heard_across_nodes(fresh_database):
    """The user's last tab to leave may be another node's than the one whose join the
    room heard, in a room since grown too crowded for presence: the leave still goes out."""
    database_url = fresh_database()
    servers = start_cluster(database_url, PRESENCE_MAX_ROOM_SIZE="2")
    try:
        room, alice, bob_first = grown_crowded(servers, watcher_at=0, early_at=1)
        bob_second = connect_to(servers[0], bob_first.user_id)
        join(bob_second, room)
        # His second tab counts once its node's row is written, after his welcome, when the
        # worker has a moment (Presence.Tends); a close of the first before that is his last.
        bobs_rows = "SELECT count(*) FROM room_presence WHERE room = %s AND user_id = %s"
        wait_for(lambda: sql(database_url, bobs_rows, (room, bob_first.user_id)) == [(2,)], 10, "both rows written")
        # (a leave would end bob's membership on both tabs: his connections close instead)
        bob_first.close()
        alice.nothing_more("presence", wait=0.8)  # bob is still online; the third came unannounced
        bob_second.close()
        assert alice.expect("presence", room=room, event="leave")["data"]["userId"] == bob_first.user_id
    finally:
        for srv in servers:
            srv.stop()


def test_dms_and_idempotency_across_instances(cluster):
    database_url = cluster[0].database_url
    alice = connect_to(cluster[0])
    alice_other = connect_to(cluster[1], alice.user_id)
    bob = connect_to(cluster[1])
    bob_other = connect_to(cluster[0], bob.user_id)
    alice.send({"type": "dm", "to": bob.user_id, "content": "across", "clientId": "x-1"})
    message = alice.expect("dm_sent")["data"]["message"]
    for client in (bob, bob_other, alice_other):
        assert client.expect("dm")["data"] == message
    # the same clientId through the other instance: the stored message, not a new one
    alice_other.send({"type": "dm", "to": bob.user_id, "content": "across", "clientId": "x-1"})
    assert alice_other.expect("dm_sent")["data"]["message"] == message
    bob.nothing_more("dm", wait=0.5)
    assert sql(database_url, "SELECT count(*) FROM messages WHERE from_user = %s", (alice.user_id,)) == [(1,)]


def test_join_with_since_across_instances_while_others_send(cluster):
    room = unique("room")
    senders = spread(cluster, 4)
    for sender in senders:
        join(sender, room)
    first = []
    for n in range(5):
        senders[0].send({"type": "message", "room": room, "content": f"before {n}"})
        first.append(senders[0].expect("message", room=room)["data"]["id"])

    def keep_sending(client: Client) -> None:
        # Paced by the server: each send waits for its own echo, so the 15 overlap the join.
        for n in range(15):
            client.send({"type": "message", "room": room, "content": f"during {n}"})
            client.expect("message", room=room, content=f"during {n}", fromUser=client.user_id)

    threads = [threading.Thread(target=keep_sending, args=(s,)) for s in senders[1:]]
    for thread in threads:
        thread.start()
    late = connect_to(cluster[1])
    join(late, room, since=first[1])
    for thread in threads:
        thread.join()
    got = [late.expect("message", room=room, timeout=15)["data"]["id"] for _ in range(3 + 45)]
    assert got == sorted(got) and len(set(got)) == len(got) and got[:3] == first[2:]
    late.nothing_more("message", wait=0.5)


def test_killed_worker_clients_resume_and_its_presence_disappears(database_url):
    servers = start_cluster(database_url)
    try:
        room = unique("room")
        watcher = connect_to(servers[1])
        join(watcher, room)
        victims = [connect_to(servers[0]) for _ in range(4)]
        for client in victims:
            join(client, room)
        sender = connect_to(servers[1])
        join(sender, room)
        for n in range(5):
            sender.send({"type": "message", "room": room, "content": f"before {n}"})
        last_seen = {c.user_id: [c.expect("message", room=room)["data"]["id"] for _ in range(5)][-1] for c in victims}
        for _ in range(5):
            watcher.expect("message", room=room)
        # kill -9 every worker of instance 0: its clients lose their connections
        for pid in servers[0].worker_pids():
            os.kill(pid, signal.SIGKILL)
        for n in range(5):
            sender.send({"type": "message", "room": room, "content": f"after {n}"})
        after = [watcher.expect("message", room=room)["data"]["id"] for _ in range(5)]
        # their users disappear within NODE_TIMEOUT_SECONDS (+ a heartbeat)
        gone = set()
        deadline = time.monotonic() + 10
        while len(gone) < 4 and time.monotonic() < deadline:
            gone.add(watcher.expect("presence", room=room, event="leave", timeout=10)["data"]["userId"])
        assert gone == {c.user_id for c in victims}
        # they reconnect to the surviving instance and resume without loss or repeat
        for client in victims:
            again = connect_to(servers[1], client.user_id)
            join(again, room, since=last_seen[client.user_id])
            assert [again.expect("message", room=room)["data"]["id"] for _ in range(5)] == after
            again.nothing_more("message", wait=0.2)
    finally:
        for srv in servers:
            srv.stop()


def test_a_killed_workers_user_whose_join_was_heard_leaves_a_crowded_room(fresh_database):
    """Burying a dead node announces the leave of a user whose join the room heard, even
    though the room has since grown too crowded for presence."""
    servers = start_cluster(fresh_database(), PRESENCE_MAX_ROOM_SIZE="2")
    try:
        room, watcher, early = grown_crowded(servers, watcher_at=1, early_at=0)
        for pid in servers[0].worker_pids():
            os.kill(pid, signal.SIGKILL)
        gone = watcher.expect("presence", room=room, event="leave", timeout=15)["data"]
        assert gone["userId"] == early.user_id
    finally:
        for srv in servers:
            srv.stop()


def traffic_with_fault(servers: list[Server], stop, start, database_url: str) -> None:
    """Senders on every instance send with clientIds, retrying until acknowledged, while a
    service is stopped and started again (FaultPhases orders the two); afterwards every
    stored message reached every listener exactly once."""
    room = unique("room")
    listeners = spread(servers, 4)
    senders = spread(servers, 4)
    for client in listeners + senders:
        join(client, room)
    per_sender = 25
    acked: dict[str, int] = {}
    phases = FaultPhases(len(senders))

    def send_all(index: int, sender: Client) -> None:
        for n in range(per_sender):
            if n == per_sender // 2:
                phases.at_halfway()
            client_id = f"f{index}-{n}"
            frame = {"type": "message", "room": room, "content": client_id, "clientId": client_id}
            acknowledges = partial(is_ack_of, client_id=client_id)
            reply, _ = send_until_acked(sender, frame, acknowledges, phases, index, time.monotonic() + 60)
            acked[client_id] = reply["data"]["id"]

    threads = [threading.Thread(target=send_all, args=(i, s)) for i, s in enumerate(senders)]
    fault_thread = threading.Thread(target=phases.run, args=(stop, start))
    for thread in [*threads, fault_thread]:
        thread.start()
    for thread in [*threads, fault_thread]:
        thread.join(120)
    assert phases.over.is_set()
    assert len(acked) == per_sender * len(senders)
    stored = dict(sql(database_url, "SELECT client_id, id FROM messages WHERE room = %s", (room,)))
    assert stored == acked
    expected = sorted(stored.values())
    for listener in listeners:
        got = [listener.expect("message", room=room, timeout=20)["data"]["id"] for _ in range(len(expected))]
        assert got == expected
        listener.nothing_more("message", wait=0.3)


def restart_during_traffic(database_url: str, stop, start, **env: str) -> None:
    """Two instances under traffic while a service is stopped and started again."""
    # A burst large enough that retries never meet the rate limit: these tests are about the outage.
    servers = start_cluster(database_url, RATE_BURST_FRAMES="1000", **env)
    try:
        traffic_with_fault(servers, stop, start, database_url)
    finally:
        for srv in servers:
            srv.stop()


def test_redis_restart_during_traffic(fresh_database, private_redis):
    restart_during_traffic(
        fresh_database(), private_redis.stop, private_redis.start, CHAT_BUS="redis", REDIS_URL=private_redis.url
    )


def test_postgres_restart_during_traffic_across_instances(embedded_postgres):
    restart_during_traffic(
        embedded_postgres.start(),
        embedded_postgres.stop,
        embedded_postgres.start,
        DB_CONNECT_TIMEOUT_SECONDS="1",
        STORE_TIMEOUT_SECONDS="4",
    )


def test_a_message_too_large_for_a_notify_payload_still_crosses(cluster):
    room = unique("room")
    sender, receiver = connect_to(cluster[0]), connect_to(cluster[1])
    join(sender, room)
    join(receiver, room)
    content = "é" * 4000  # 8,000 bytes of UTF-8: over PostgreSQL's NOTIFY payload limit
    sender.send({"type": "message", "room": room, "content": content})
    sender.send({"type": "message", "room": room, "content": "small one after"})
    first, second = (receiver.expect("message", room=room)["data"] for _ in range(2))
    assert first["content"] == content and second["content"] == "small one after"
    assert first["id"] < second["id"]


class Announcements:
    """What the servers put on the bus, heard the way another node would hear it."""

    def __init__(self, bus: str, database_url: str, redis_url: str | None) -> None:
        if bus == "postgres":
            self.conn = psycopg2.connect(database_url)
            self.conn.autocommit = True
            self.conn.cursor().execute("LISTEN chat_events")
        else:
            self.pubsub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
            self.pubsub.subscribe(redis_channel(sql(database_url, "SELECT id FROM chat_deployment")[0][0]))
        self.bus = bus

    def message_ids(self, wait: float) -> list[int]:
        """Ids of the messages announced within `wait` seconds from now."""
        return [body["d"]["id"] for body in self.bodies(wait) if body["k"] == "m"]

    def wait_for_hello(self, timeout: float = 10.0) -> None:
        """Until a node says hello (heard at once by the other nodes as well)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(body["k"] == "hello" for body in self.bodies(wait=0.1, until_any=True)):
                return
        raise AssertionError("no node said hello")

    def bodies(self, wait: float, until_any: bool = False) -> list[dict]:
        """What was put on the bus within `wait` seconds (or up to the first, with until_any)."""
        payloads: list[str] = []
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0 and not (until_any and payloads):
            if self.bus == "postgres":
                if select.select([self.conn], [], [], left)[0]:
                    self.conn.poll()
                    payloads += [n.payload for n in self.conn.notifies]
                    self.conn.notifies.clear()
            elif item := self.pubsub.get_message(timeout=left):
                payloads.append(item["data"].decode())
        return [json.loads(payload.partition("|")[2]) for payload in payloads]

    def close(self) -> None:
        if self.bus == "postgres":
            self.conn.close()
        else:
            self.pubsub.close()


@pytest.mark.parametrize("bus", ["postgres", "redis"])
def test_a_lone_node_announces_nothing_until_another_says_hello(fresh_database, private_redis, bus):
    database_url = fresh_database()
    node_timeout = 2.0
    env = {**CLUSTER_ENV, "NODE_TIMEOUT_SECONDS": str(node_timeout), "CHAT_BUS": bus, "REDIS_URL": private_redis.url}
    room = unique("room")
    heard = Announcements(bus, database_url, private_redis.url)
    servers = [Server(database_url, **env).start()]
    try:
        alice = connect_to(servers[0])
        join(alice, room)
        # A new node announces until its heartbeats have found it alone for NODE_TIMEOUT_SECONDS.
        time.sleep(node_timeout + 1.0)
        heard.bodies(wait=0.2)  # its hello and alice's join, from before it knew it was alone
        alice.send({"type": "message", "room": room, "content": "nobody else listens"})
        alone = alice.expect("message", room=room)["data"]["id"]
        alice.send({"type": "typing", "room": room})
        assert heard.bodies(wait=1.0) == [], "a node alone put its messages or typing on the bus"

        servers.append(Server(database_url, **env).start())
        bob = connect_to(servers[1])  # its worker starts chatting: its listener says hello
        heard.wait_for_hello()
        assert join(bob, room)["data"]["status"] == "ok"
        alice.send({"type": "message", "room": room, "content": "now someone does"})
        first_after = alice.expect("message", room=room)["data"]["id"]
        assert bob.expect("message", room=room)["data"]["id"] == first_after
        bob.send({"type": "message", "room": room, "content": "and answers"})
        answer = alice.expect("message", room=room)["data"]["id"]
        assert heard.message_ids(wait=1.0) == [first_after, answer]
        assert alone < first_after < answer

        servers[1].stop()
        # Its last heartbeat counts for NODE_TIMEOUT_SECONDS, and holds the first for as long.
        time.sleep(2 * node_timeout + 1.0)
        alice.send({"type": "message", "room": room, "content": "alone again"})
        alice.expect("message", room=room)
        assert heard.message_ids(wait=1.0) == [], "the node kept announcing after the other left"
    finally:
        heard.close()
        for srv in servers:
            srv.stop()


def test_deployments_sharing_a_redis_never_hear_each_other(fresh_database, private_redis):
    """Two deployments, each with its own database and secret, on databases /0 and /1 of
    one Redis (whose pub/sub ignores the number): the same room name and the same user
    ids on both. A's room message and DM reach nobody of B, and B's first message in the
    room, seq 1 like A's, reaches B's member on B's other node."""
    sent_through = redis.Redis.from_url(private_redis.url).pubsub(ignore_subscribe_messages=True)
    sent_through.psubscribe("*")  # whatever channel: to know when A's payloads have passed
    secrets = {"a": SECRET, "b": "another-deployments-secret-long-enough-for-hs256"}
    servers: dict[str, list[Server]] = {}
    try:
        for name, db in (("a", 0), ("b", 1)):
            env = {**CLUSTER_ENV, "CHAT_BUS": "redis", "REDIS_URL": f"redis://127.0.0.1:{private_redis.port}/{db}"}
            database_url = fresh_database()
            servers[name] = [Server(database_url, JWT_SECRET=secrets[name], **env).start() for _ in range(2)]
        room, first, second = unique("same-name"), new_user_id(), new_user_id()

        def connect_as(deployment: str, node: int, user_id: int) -> Client:
            token = make_token(user_id, f"{deployment}{user_id}", secret=secrets[deployment])
            client = Client.connect(servers[deployment][node].url, token)
            client.expect("welcome")
            return client

        a_first, a_second = connect_as("a", 0, first), connect_as("a", 1, second)
        b_first, b_second = connect_as("b", 0, first), connect_as("b", 1, second)
        for client in (a_first, a_second, b_first, b_second):
            join(client, room)
        a_first.send({"type": "message", "room": room, "content": "A's room message"})
        a_first.send({"type": "dm", "to": second, "content": "A's DM"})
        assert a_second.expect("message", room=room)["data"]["content"] == "A's room message"
        assert a_second.expect("dm")["data"]["content"] == "A's DM"
        wait_for(lambda: b"A's DM" in (sent_through.get_message(timeout=0.1) or {}).get("data", b""), 10, "A's DM out")

        b_first.send({"type": "message", "room": room, "content": "B's first message"})
        assert b_second.expect("message", room=room)["data"]["content"] == "B's first message"
        assert b_first.expect("message", room=room)["data"]["content"] == "B's first message"
        for client in (b_first, b_second):
            client.nothing_more("message", wait=0.3)
            client.nothing_more("dm", wait=0.3)
    finally:
        sent_through.close()
        for srv in (srv for pair in servers.values() for srv in pair):
            srv.stop()


def test_membership_follows_the_user_on_every_worker_and_host(cluster):
    """Four tabs of one user, over both instances (and so their workers): a join on one
    gives join_ack on all, all receive; a leave on another gives `left` on all, and none
    receives the room any more. The watcher hears one join and one leave."""
    room = unique("devices")
    watcher, sender = connect_to(cluster[0]), connect_to(cluster[1])
    join(watcher, room)
    join(sender, room)
    watcher.expect("presence", room=room, event="join", userId=sender.user_id)
    user_id = new_user_id()
    tabs = [connect_to(cluster[index % 2], user_id) for index in range(4)]
    join(tabs[0], room)
    for tab in tabs[1:]:
        tab.expect("join_ack", room=room, timeout=15)
    watcher.expect("presence", room=room, event="join", userId=user_id)
    sender.send({"type": "message", "room": room, "content": "to every device"})
    sent = sender.expect("message", room=room)["data"]
    for tab in tabs:
        assert tab.expect("message", room=room)["data"] == sent
    tabs[3].send({"type": "leave", "room": room})
    for tab in tabs:
        assert tab.expect("left", room=room, timeout=15) == {"type": "left", "room": room}
    assert watcher.expect("presence", room=room, event="leave")["data"]["userId"] == user_id
    sender.send({"type": "message", "room": room, "content": "to nobody of theirs"})
    sender.expect("message", room=room)
    for tab in tabs:
        tab.nothing_more("message", wait=0.3)
    watcher.nothing_more("presence", wait=0.5)


def test_a_member_reconnecting_elsewhere_is_told_once_and_receives_without_a_join(cluster):
    """A member's only connection closes (leave, once), then one opens on the other
    instance without a join (join, once): it receives the room from its welcome on."""
    room = unique("roam")
    watcher, sender = connect_to(cluster[0]), connect_to(cluster[0])
    join(watcher, room)
    join(sender, room)
    watcher.expect("presence", room=room, event="join", userId=sender.user_id)
    roamer = connect_to(cluster[0])
    join(roamer, room)
    watcher.expect("presence", room=room, event="join", userId=roamer.user_id)
    roamer.close()
    watcher.expect("presence", room=room, event="leave", userId=roamer.user_id, timeout=15)
    again = connect_to(cluster[1], roamer.user_id)
    watcher.expect("presence", room=room, event="join", userId=roamer.user_id, timeout=15)
    sender.send({"type": "message", "room": room, "content": "welcome back"})
    assert again.expect("message", room=room, timeout=15)["data"]["content"] == "welcome back"
    watcher.nothing_more("presence", wait=1.0)


def test_private_rooms_invitations_and_removals_reach_every_tab_on_every_host(cluster):
    """Alice and Bob, two tabs each, one per instance. Alice creates a private room (every
    tab of hers gets join_ack), invites Bob (each of his tabs gets `invited` then
    join_ack, hers a presence join once), they talk, she removes him (each of his tabs
    gets `left` with the reason, and nothing of the room after it)."""
    room = unique("private")
    alice_id, bob_id = new_user_id(), new_user_id()
    alice = [connect_to(cluster[index], alice_id) for index in range(2)]
    bob = [connect_to(cluster[index], bob_id) for index in range(2)]
    alice[0].send({"type": "create_room", "room": room, "private": True, "description": "two hosts"})
    for tab in alice:
        tab.expect("join_ack", room=room, timeout=15)
    alice[1].send({"type": "invite", "room": room, "userId": bob_id})
    for tab in bob:
        data = tab.expect("invited", room=room, timeout=15)["data"]
        assert data["by"]["userId"] == alice_id and data["private"] is True and data["description"] == "two hosts"
        tab.expect("join_ack", room=room, timeout=15)
    for tab in alice:
        tab.expect("presence", room=room, event="join", userId=bob_id, timeout=15)
    bob[1].send({"type": "message", "room": room, "content": "hello from host two"})
    for tab in (*alice, bob[0]):
        assert tab.expect("message", room=room, timeout=15)["data"]["content"] == "hello from host two"
    bob[1].expect("message", room=room)
    alice[0].send({"type": "remove", "room": room, "userId": bob_id})
    for tab in bob:
        assert tab.expect("left", room=room, timeout=15) == {"type": "left", "room": room, "reason": "removed"}
    for tab in alice:
        tab.expect("presence", room=room, event="leave", userId=bob_id, timeout=15)
    alice[1].send({"type": "message", "room": room, "content": "after the removal"})
    for tab in alice:
        tab.expect("message", room=room, content="after the removal", timeout=15)
    for tab in bob:
        tab.nothing_more("message", wait=0.5)
        tab.send({"type": "room_history", "room": room})
        tab.expect_error("not_found")
    for tab in alice:
        tab.nothing_more("presence", wait=0.3)


def test_a_room_turned_private_in_sql_is_refused_to_non_members_on_every_host(cluster):
    """The flip is read by each request: on both instances a non-member gets not_found at
    once, while the members, on both instances, keep receiving the room."""
    room = unique("flipped")
    members = [connect_to(cluster[index]) for index in range(2)]
    outsiders = [connect_to(cluster[index]) for index in range(2)]
    for member in members:
        join(member, room)
    database_url = cluster[0].database_url
    sql(database_url, "UPDATE rooms SET is_private = true WHERE name = %s", (room,))
    for outsider in outsiders:
        for frame in ({"type": "room_history", "room": room}, {"type": "join", "room": room, "since": 0}):
            outsider.send(frame)
            outsider.expect_error("not_found")
    members[0].send({"type": "message", "room": room, "content": "still ours"})
    for member in members:
        assert member.expect("message", room=room, timeout=15)["data"]["content"] == "still ours"
    for outsider in outsiders:
        outsider.nothing_more("message", wait=0.3)


def arrived_after_its_join_ack(tab: Client, room: str, content: str) -> None:
    """The tab gets the room's join_ack, then the message, once."""
    tab.expect("join_ack", room=room, timeout=15)
    assert not [f for f in tab.seen if f.get("type") == "message"], "a message came before the join_ack"
    tab.expect("message", room=room, content=content, timeout=15)
    tab.nothing_more("message", wait=0.2)


def test_a_message_sent_right_after_a_membership_begins_reaches_every_tab_on_every_host(cluster):
    """A membership begun on one host reaches the user's tabs on the other through the
    bus, and a message sent at once behind it can get there first (for a room that host
    has nobody else in, it finds no one to deliver to). The tab is still sent it, after
    its join_ack: the legacy client's first message to a room (it joins, PROTOCOL.md §7),
    a join and a message sent together at /ws, and an invitation followed by a message."""
    for round in range(4):
        user_id = new_user_id()
        legacy = Client.connect(cluster[0].url, make_token(user_id, f"user{user_id}"), path="/")
        legacy.expect("welcome")
        elsewhere = connect_to(cluster[1], user_id)
        room = unique(f"first-{round}")
        legacy.send({"type": "message", "room": room, "content": "typed before any join"})
        legacy.expect("message", room=room)
        arrived_after_its_join_ack(elsewhere, room, "typed before any join")

        tab = connect_to(cluster[0], user_id)
        room = unique(f"joined-{round}")
        tab.send({"type": "join", "room": room})
        tab.send({"type": "message", "room": room, "content": "right behind the join"})
        tab.expect("message", room=room)
        arrived_after_its_join_ack(elsewhere, room, "right behind the join")

        owner = connect_to(cluster[0])
        room = unique(f"invited-{round}")
        owner.send({"type": "create_room", "room": room, "private": True})
        owner.expect("join_ack", room=room)
        owner.send({"type": "invite", "room": room, "userId": user_id})
        owner.send({"type": "message", "room": room, "content": "right behind the invitation"})
        owner.expect("message", room=room)
        elsewhere.expect("invited", room=room, timeout=15)
        arrived_after_its_join_ack(elsewhere, room, "right behind the invitation")
        for client in (legacy, elsewhere, tab, owner):
            client.close()


def test_nothing_stored_after_a_leave_reaches_the_users_tabs_on_another_host(fresh_database):
    """A leave on one host ends the membership for every tab: a message stored after it
    must not reach the user's tab on the other host, before its `left` or after; one stored
    before it arrives there before the `left`. The message is sent while the leave is on
    its way; which was stored first is the order of their NOTIFYs (of their commits), on
    the PostgreSQL bus, whose order every node hears."""
    database_url = fresh_database()
    servers = start_cluster(database_url, CHAT_BUS="postgres")
    heard = Announcements("postgres", database_url, None)
    try:
        for round in range(8):
            room = unique(f"left-{round}")
            user_id = new_user_id()
            here, elsewhere = connect_to(servers[0], user_id), connect_to(servers[1], user_id)
            other = connect_to(servers[0])
            join(other, room)
            join(here, room)
            elsewhere.expect("join_ack", room=room, timeout=15)
            heard.bodies(wait=0.2)  # (what came before)
            here.send({"type": "leave", "room": room})
            other.send({"type": "message", "room": room, "content": "during the leave"})
            elsewhere.expect("left", room=room, timeout=15)
            order = [
                body["k"]
                for body in heard.bodies(wait=0.5)
                if (body["k"] == "member" and body.get("ended"))
                or (body["k"] == "m" and body["d"]["content"] == "during the leave")
            ]
            came = [f for f in elsewhere.seen if f.get("type") == "message"]
            if order == ["m", "member"]:
                assert [f["data"]["content"] for f in came] == ["during the leave"]
            else:
                assert order == ["member", "m"]
                assert not came, "a message stored after the leave reached the user's other tab"
            elsewhere.seen = [f for f in elsewhere.seen if f not in came]
            elsewhere.nothing_more("message", wait=0.2)
            for client in (here, elsewhere, other):
                client.close()
    finally:
        heard.close()
        for srv in servers:
            srv.stop()


def test_one_client_id_sent_by_two_tabs_on_two_instances_at_once_is_stored_once(cluster):
    """Each pair of sends races: both tabs send before either commit. One row per
    clientId; the other members get each message once, in order; each tab gets the stored
    message, live as a member and as the answer to its own send (a resend's answer is then
    a second copy: docs/protocol.md, "Resends"), and never a message stored twice."""
    database_url = cluster[0].database_url
    room = unique("room")
    tab_a = connect_to(cluster[0])
    tab_b = connect_to(cluster[1], tab_a.user_id)
    bob = connect_to(cluster[1])
    for client in (tab_a, tab_b, bob):
        join(client, room)
    keys = [f"twin-{n}" for n in range(10)]
    for key in keys:
        frame = {"type": "message", "room": room, "content": f"once {key}", "clientId": key}
        tab_a.send(frame)
        tab_b.send(frame)
    seen_by_bob = [bob.expect("message", room=room, clientId=key)["data"]["id"] for key in keys]
    assert seen_by_bob == sorted(seen_by_bob)
    bob.nothing_more("message", wait=0.5)
    expected = dict(zip(keys, seen_by_bob, strict=True))
    for tab in (tab_a, tab_b):
        copies: dict[str, int] = {}
        for key, message_id in expected.items():
            assert tab.expect("message", room=room, clientId=key)["data"]["id"] == message_id
        while True:  # the answers to resends, if this tab's send came second
            try:
                data = tab.expect("message", room=room, timeout=0.5)["data"]
            except TimeoutError:
                break
            assert expected[data["clientId"]] == data["id"]
            copies[data["clientId"]] = copies.get(data["clientId"], 0) + 1
        assert all(count == 1 for count in copies.values()), copies
    stored = sql(database_url, "SELECT client_id, id FROM messages WHERE from_user = %s ORDER BY id", (tab_a.user_id,))
    assert stored == list(expected.items())
