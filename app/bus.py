"""Fan-out between server processes and hosts through an existing engine.

PostgreSQL LISTEN/NOTIFY by default (messages are announced inside their own insert
transaction, see store.BATCH), Redis pub/sub when REDIS_URL is set.
Both are at-most-once: after the listener (re)connects, the process catches up from the
database (`on_connected`), and per-channel gates (hub.py) repair order and gaps.

Every payload is "<deployment id>/<node id>|<json body>": a process skips its own by
that prefix without parsing them, and drops one of another deployment (a Redis shared
with it) before any gate sees it, so that it neither reaches a member here nor takes a
sequence number. The body is one JSON object whose `k` says what it is:

  {"k": "m", "s": seq, "d": data}   a committed message; `d` is its wire `data`
                                    (PROTOCOL.md §3), `s` its room/conversation seq
  {"k": "ref", "id": id}            a message too large for a NOTIFY: fetch it by id
  {"k": "e", "s": seq, "id": eventId, "t": type, "c": channel, "d": data}
                                    an edit, delete or reaction (app/events.py): `t` its
                                    frame type, `c` its channel (["r", room] or ["d", low,
                                    high]), `d` the frame's data (PROTOCOL.md §10)
  {"k": "eref", "id": eventId}      an event too large for a NOTIFY: fetch it by id
  {"k": "p", "room", "event": "join"|"leave", "userId", "username", "v": number}
                                    presence, numbered per (room, user) (app/presence.py)
  {"k": "t", "room", "userId", "username"}   typing
  {"k": "member", "room", "userId", "after"? | "ended"? | "invited"? | "removed"?}
                                    the user's membership of the room began or ended:
                                    their connections there read it again; `after`, for
                                    one that began, is the room's last id then: their
                                    connections here are sent what came later; `ended`
                                    (a leave) and `removed`: they stop receiving the room
                                    at once (app/membership.py)
  {"k": "dt", "to", "userId", "username"}    typing in the DM conversation with `to`
  {"k": "read", "userId", "room"|"with", "d": {"lastReadId", "unread", "mentions"}}
                                    a user's read state after a `read` (PROTOCOL.md §9),
                                    for that user's connections
  {"k": "hello"}                    a node started listening

Short keys: a message's payload is built for every message on the PostgreSQL bus, in
SQL (store.BATCH, announced inside the insert transaction; presence likewise), and in
Python here for Redis; both follow this table.

Channels are per deployment. PostgreSQL's NOTIFY is heard only by listeners of the same
database, so its fixed CHANNEL is private to the deployment already. Redis pub/sub
ignores the database number of REDIS_URL: its channel carries the deployment id that
schema.sql stores in the database (chat_deployment), or is set by BUS_CHANNEL.

A process alone (no other node alive in chat_nodes, no hello or payload from one lately)
does not announce its messages or typing at all: nobody would hear them, and announcing
weighs on a single worker's latency. A node says hello when its listener connects, so
that the others start announcing at once; a message committed before they heard it is
one more message pub/sub did not bring, found by the gates' gap filling.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

import gevent
import gevent.socket
import orjson
import psycopg2
from gevent.event import Event

from . import db
from .errors import ChatError
from .messages import StoredEvent, StoredMessage
from .metrics import BUS_RECONNECTS, FOREIGN_PAYLOADS
from .transport import coalesced

log = logging.getLogger(__name__)

# The NOTIFY channel (per database, so per deployment), and the prefix of Redis channels.
CHANNEL = "chat_events"
# A listener that has heard nothing for this long asks its server for an answer, and
# reconnects when none comes within as long again: a hung server (or a proxy in between)
# leaves the connection open and silent, and events from other nodes would be lost for
# as long as it stays so, not just until TCP gives up hours later.
LISTENER_PROBE_SECONDS = 5.0
RECONNECT_FIRST_SECONDS = 0.2
RECONNECT_MAX_SECONDS = 5.0
# Redis payloads waiting for their publisher at most: with Redis hung, the oldest are
# dropped (their messages are stored; other processes find them by their gap checks).
REDIS_OUTGOING_MAX = 10_000
# Payloads per pipelined round trip to Redis.
REDIS_PUBLISH_BATCH = 256


def redis_channel(deployment: str) -> str:
    """The Redis channel of a deployment, unless BUS_CHANNEL names another."""
    return f"{CHANNEL}:{deployment}"


def message_payload(origin: str, message: StoredMessage) -> str:
    body = orjson.dumps({"k": "m", "s": message.seq, "d": message.data}).decode()
    return f"{origin}|{body}"


def stored_event_payload(origin: str, event: StoredEvent) -> str:
    """The payload of a committed §10 event (on the PostgreSQL bus, event_store.py
    assembles the same in SQL, inside the event's transaction)."""
    body = orjson.dumps(
        {"k": "e", "s": event.seq, "id": event.id, "t": event.kind, "c": event.channel, "d": event.data}
    ).decode()
    return f"{origin}|{body}"


def stored_event_of(body: dict) -> StoredEvent:
    """The event an "e" payload carries."""
    return StoredEvent(body["id"], body["s"], body["d"], kind=body["t"], event_channel=tuple(body["c"]))


def event_payload(origin: str, event: dict) -> str:
    return f"{origin}|{orjson.dumps(event).decode()}"


class Bus:
    """Publishing and listening; subclasses choose the engine."""

    # Name of the NOTIFY channel when messages are announced inside their transaction.
    notify_channel: str | None = None

    def __init__(
        self,
        origin: str,
        deployment: str,
        on_payload: Callable[[dict], None],
        on_connected: Callable[[], None],
        peer_hold_seconds: float,
    ) -> None:
        # What this process's payloads start with (store.BATCH and presence write it too).
        self.origin = f"{deployment}/{origin}"
        self.own_prefix = self.origin + "|"
        self.deployment_prefix = deployment + "/"
        self.foreign_seen = False
        self.on_payload = on_payload
        self.on_connected = on_connected
        self.connected = False
        self.greenlet: gevent.Greenlet | None = None
        # How long a sign of another node keeps this one announcing (the node timeout:
        # a node that said nothing for that long is dead to the others as well).
        self.peer_hold_seconds = peer_hold_seconds
        # Until then (time.monotonic()) another node may be listening. A new node
        # announces from the start, until its heartbeats have found it alone for a while.
        self.peers_until = time.monotonic() + peer_hold_seconds

    def start(self) -> None:
        self.greenlet = gevent.spawn(self._listen_forever)

    def announcing(self) -> bool:
        """Whether committed messages go on the bus: another node may be listening."""
        return time.monotonic() < self.peers_until

    def handled_until(self) -> float | None:
        """A moment (time.monotonic()) before which every payload that reached this process was handled.

        None when that is not known (not listening, or an engine that does not track it).

        A busy process handles the bus's payloads late: a message missing from a room is
        then most likely among those not handled yet, not lost (see Hub._fill).
        """
        return None

    def batch_notify_channel(self) -> str | None:
        """The NOTIFY channel for the next group commit, None when nobody would listen."""
        return self.notify_channel if self.notify_channel and self.announcing() else None

    def note_peers(self, alive_others: int) -> None:
        """The heartbeat's count of the other live nodes."""
        if alive_others:
            self._peer_seen()

    def _peer_seen(self) -> None:
        self.peers_until = time.monotonic() + self.peer_hold_seconds

    def _say_hello(self) -> None:
        """Tell the other nodes that one more listens, so that they announce from now on."""
        try:
            self.publish_event({"k": "hello"})
        except ChatError:
            pass  # the heartbeat tells them too, a little later

    def publish_messages(self, messages: list[StoredMessage]) -> None:
        """Announce committed messages (engines that cannot do it inside the transaction)."""

    def publish_stored_event(self, event: StoredEvent) -> None:
        """Announce a committed §10 event (engines that cannot do it inside the transaction)."""

    def publish_event(self, event: dict, only_if_heard: bool = False) -> None:
        """Announce a presence or typing event.

        Presence on PostgreSQL goes inside the transaction that changes it instead
        (app/presence.py). `only_if_heard` skips it while no other node seems to listen, as messages are
        skipped (typing). Presence goes out regardless: nothing repairs a lost presence
        event, and a node that has just started may listen before this one heard its
        hello.
        """
        if only_if_heard and not self.announcing():
            return
        self._publish_event(event)

    def _publish_event(self, event: dict) -> None:
        raise NotImplementedError

    def _receive(self, payload: str) -> None:
        if payload.startswith(self.own_prefix):
            return  # our own: delivered locally already
        if not payload.startswith(self.deployment_prefix):
            FOREIGN_PAYLOADS.inc()
            if not self.foreign_seen:
                self.foreign_seen = True
                log.error("bus: dropping payloads of another deployment on this channel (is BUS_CHANNEL shared?)")
            return
        self._peer_seen()  # (a hello says nothing more than that: on_payload ignores it)
        try:
            _, _, body = payload.partition("|")
            self.on_payload(orjson.loads(body))
        except Exception:
            log.exception("bad bus payload")

    def _listen_forever(self) -> None:
        delay = RECONNECT_FIRST_SECONDS
        while True:
            try:
                self._listen()
            except gevent.GreenletExit:
                raise
            except Exception as exc:
                log.warning("bus listener lost its connection (%s); reconnecting", exc.__class__.__name__)
            if self.connected:
                delay = RECONNECT_FIRST_SECONDS  # it was listening: a new outage starts
            self.connected = False
            BUS_RECONNECTS.inc()
            gevent.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    def _listen(self) -> None:
        raise NotImplementedError


class PostgresBus(Bus):
    """LISTEN/NOTIFY on the chat database: no extra component, announced at commit."""

    notify_channel = CHANNEL

    def __init__(self, dsn: str, pool: db.Pool, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dsn = dsn
        self.pool = pool
        # Every payload that reached the listener before this moment has been handled;
        # and the listener's socket while it waits for more (see handled_until).
        self._handled_until = 0.0
        self._waiting_on: int | None = None

    def _publish_event(self, event: dict) -> None:
        with self.pool.autocommit() as cur:
            cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, event_payload(self.origin, event)))

    def handled_until(self) -> float | None:
        if not self.connected:
            return None
        fd = self._waiting_on
        if fd is not None and not db.readable(fd):
            return time.monotonic()  # waiting, and nothing has come: all handled
        return self._handled_until

    def _listen(self) -> None:
        conn = db.connect(self.dsn, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(f"LISTEN {CHANNEL}")
            self.connected = True
            log.info("bus: listening on PostgreSQL channel %s", CHANNEL)
            # Listening first, then catching up: nothing committed falls in between.
            self.on_connected()
            self._say_hello()
            while True:
                self._waiting_on = conn.fileno()
                try:
                    gevent.socket.wait_read(conn.fileno(), LISTENER_PROBE_SECONDS, TimeoutError())
                except TimeoutError:
                    self._waiting_on = None
                    self._probe(conn)  # notifications read meanwhile are handled below
                self._waiting_on = None
                read_at = time.monotonic()
                conn.poll()  # reads everything that has come
                notifies, conn.notifies[:] = list(conn.notifies), []
                with coalesced():  # what came at once goes to each client in one write
                    for notify in notifies:
                        self._receive(notify.payload)
                self._handled_until = read_at
        finally:
            self._waiting_on = None
            try:
                conn.close()
            except psycopg2.Error:
                pass

    @staticmethod
    def _probe(conn) -> None:
        """A silent listener asks PostgreSQL something; no answer in time: reconnect."""
        with gevent.Timeout(LISTENER_PROBE_SECONDS, ConnectionError("no answer to a probe")), conn.cursor() as cur:
            cur.execute("SELECT 1")


class RedisBus(Bus):
    """Redis pub/sub: published right after each commit, at most once.

    A greenlet of its own publishes, in order, what the commits and events queue: a
    Redis that does not answer must not hold up the group commit (every batch would
    wait out the socket timeout).
    """

    def __init__(self, url: str, channel: str, **kwargs) -> None:
        super().__init__(**kwargs)
        import redis

        self.url = url
        self.channel = channel
        self.publisher = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.outgoing: deque[str] = deque(maxlen=REDIS_OUTGOING_MAX)
        self.outgoing_ready = Event()
        self.publisher_greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        super().start()
        self.publisher_greenlet = gevent.spawn(self._publish_forever)

    def publish_messages(self, messages: list[StoredMessage]) -> None:
        if not messages or not self.announcing():
            return
        self.outgoing.extend(message_payload(self.origin, message) for message in messages)
        self.outgoing_ready.set()

    def publish_stored_event(self, event: StoredEvent) -> None:
        if self.announcing():
            self.outgoing.append(stored_event_payload(self.origin, event))
            self.outgoing_ready.set()

    def _publish_event(self, event: dict) -> None:
        self.outgoing.append(event_payload(self.origin, event))
        self.outgoing_ready.set()

    def _publish_forever(self) -> None:
        while True:
            self.outgoing_ready.wait()
            self.outgoing_ready.clear()
            while self.outgoing:
                payloads = [self.outgoing.popleft() for _ in range(min(len(self.outgoing), REDIS_PUBLISH_BATCH))]
                try:
                    pipe = self.publisher.pipeline(transaction=False)
                    for payload in payloads:
                        pipe.publish(self.channel, payload)
                    pipe.execute()
                except Exception as exc:
                    # Stored and delivered here; other processes find them by their gap checks.
                    log.warning("bus: publish to Redis failed (%s)", exc.__class__.__name__)

    def _listen(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=2.0)
        pubsub = client.pubsub(ignore_subscribe_messages=False)
        try:
            pubsub.subscribe(self.channel)
            heard_at, probed = time.monotonic(), False
            while True:
                # Not pubsub.listen(): it blocks for good on a connection that went silent.
                item = pubsub.get_message(timeout=LISTENER_PROBE_SECONDS)
                if item is None:
                    if time.monotonic() - heard_at < LISTENER_PROBE_SECONDS:
                        continue
                    if probed:
                        raise ConnectionError("no answer to a probe")
                    pubsub.ping()  # answered with a 'pong' message
                    probed = True
                    continue
                heard_at, probed = time.monotonic(), False
                if item["type"] == "subscribe":
                    self.connected = True
                    log.info("bus: subscribed to Redis channel %s", self.channel)
                    self.on_connected()
                    self._say_hello()
                elif item["type"] == "message":
                    data = item["data"]
                    self._receive(data.decode() if isinstance(data, bytes) else data)
        finally:
            try:
                pubsub.close()
                client.close()
            except Exception:
                pass
