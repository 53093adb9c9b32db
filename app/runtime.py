"""The chat machinery of one server process, started on first use.

Owns the database pool, the local hub, the group-commit batcher, the bus and presence, and
the background greenlets (commit loop, bus listener, heartbeat, search index merge,
event-loop lag probe).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable

import gevent
from flask import Flask, current_app
from gevent.lock import Semaphore

from . import (
    db,
    event_store,
    events,
    pauses,
    protocol,
    schema,
    search_merge,
    store,
)
from .batcher import Batcher
from .bus import Bus, PostgresBus, RedisBus, redis_channel, stored_event_of
from .connection import watch_connections
from .errors import ChatError
from .event_batch import EventBatches
from .hub import Hub
from .membership import Memberships
from .messages import StoredEvent, StoredMessage, message_data
from .prepared import plan_as_prepared
from .presence import STATEMENTS as PRESENCE_STATEMENTS
from .presence import Presence
from .read_marks import STATEMENTS as READ_MARKS_STATEMENTS
from .read_marks import ReadMarks
from .read_state import ReadState
from .shared_read import SharedRead
from .transport import coalesced
from .users_online import UsersOnline
from .welcome_reads import STATEMENTS as WELCOME_STATEMENTS
from .welcome_reads import WelcomeReads
from .wsframe import text_frame

log = logging.getLogger(__name__)

# How old the `rooms` list may be: room counts move with every join anyway, and a crowd
# asking at once must cost the database one query, not one each.
ROOMS_MAX_AGE_SECONDS = 1.0


class ChatRuntime:
    def __init__(self, config: dict) -> None:
        self.config = config
        db.make_cooperative()
        schema.ensure_schema(config["DATABASE_URL"], config["DB_CONNECT_TIMEOUT_SECONDS"])
        self.node_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.pool = db.Pool(
            config["DATABASE_URL"],
            size=config["DB_POOL_SIZE"],
            connect_timeout=config["DB_CONNECT_TIMEOUT_SECONDS"],
            acquire_timeout=config["DB_ACQUIRE_TIMEOUT_SECONDS"],
            setup=prepare_pool_statements,
            statement_timeout=config["DB_STATEMENT_TIMEOUT_SECONDS"],
        )
        # Which deployment this database is: it scopes the bus (app/bus.py). Read before
        # anything starts: a worker that cannot read it cannot serve (the next connection
        # tries again).
        with self.pool.autocommit() as cur:
            self.deployment = store.deployment_id(cur)
        self.limits = protocol.Limits(
            max_content_chars=config["MAX_CONTENT_CHARS"],
            history_default_limit=config["HISTORY_DEFAULT_LIMIT"],
            history_max_limit=config["HISTORY_MAX_LIMIT"],
        )
        self.bus = self._make_bus()
        # Users known to have a row: a DM's recipient is looked up once, a sender's row is
        # created once (the batcher adds the senders it creates).
        self.known_users: set[int] = set()
        self.hub = Hub(self._fetch_channel, config["GAP_WAIT_SECONDS"], self.bus.handled_until)
        self.presence = Presence(
            self.pool,
            self.bus,
            self.node_id,
            config["NODE_TIMEOUT_SECONDS"],
            self.deliver_event,
            max_announced_room_size=config["PRESENCE_MAX_ROOM_SIZE"],
            user_here=self.hub.user_in_room,
            members_here=lambda room: self.hub.members_by_room.get(room, ()),
            rooms_per_minute=config["ROOMS_CREATE_PER_MINUTE"],
            crowd_connecting=lambda: self.welcome_reads.busy() or self.membership.resume_reads.busy(),
        )
        self.membership = Memberships(
            self.hub,
            self.presence,
            self.pool,
            config["JOIN_ACK_MAX_USERS"],
            config["ROOMS_CREATE_PER_MINUTE"],
            config["REPLAY_PAGE_SIZE"],
        )
        # connecting users' `welcome` reads, many users a round trip
        self.welcome_reads = WelcomeReads(self.pool)
        # `read` frames: many users' markers moved and counted a round trip.
        self.read_marks = ReadMarks(self.pool)
        self.users_online = UsersOnline(self.pool, self.node_id, lambda: self.hub.connections_by_user)
        self.batcher = Batcher(
            self.pool,
            origin=self.bus.origin,
            notify_channel=self.bus.batch_notify_channel,
            on_committed=self._committed,
            max_batch=config["BATCH_MAX_MESSAGES"],
            timeout_seconds=config["STORE_TIMEOUT_SECONDS"],
            pipelines=config["COMMIT_PIPELINES"],
            known_users=self.known_users,
            local_commits=self.hub.local_commits,
        )
        # edits, deletes and reactions: many decided a round trip, stored by the lanes of
        # the group commit, a statement a lane
        self.event_batches = EventBatches(
            self.pool,
            self.batcher,
            events.decide,
            self.deliver_stored_event,
            self.bus.batch_notify_channel,
            self.bus.origin,
        )
        # The public rooms `rooms` lists, read at most once a second however many clients
        # ask (a presence event can make every member of a room ask at once), with the count
        # of privacy changes read before them (schema.sql, chat_privacy_changes); and that
        # count now, read at each `rooms` (one read for all who ask at once): a list older
        # than a change is read again (public_rooms).
        self.rooms_list = SharedRead(self._read_rooms, ROOMS_MAX_AGE_SECONDS)
        self.privacy_changes = SharedRead(self._read_privacy_changes, 0.0)
        # every open WebSocket of this process, authenticated or not
        self.connections: set = set()
        self.connection_watch = gevent.spawn(
            watch_connections, self.connections, config["PING_INTERVAL_SECONDS"], config["PONG_TIMEOUT_SECONDS"]
        )
        self.shutting_down = False
        self.bus.start()
        self.heartbeat = gevent.spawn(self._heartbeat_forever)
        # the search index's pending entries, merged out of the group commit's way
        self.search_merge = gevent.spawn(search_merge.merge_forever, self.pool)
        pauses.watch_garbage_collector()
        self.lag_probe = pauses.watch_event_loop()
        log.info("chat runtime started as node %s (bus: %s)", self.node_id, type(self.bus).__name__)

    def _make_bus(self) -> Bus:
        kind = self.config["CHAT_BUS"]
        if kind == "auto":
            kind = "redis" if self.config["REDIS_URL"] else "postgres"
        callbacks = {
            "origin": self.node_id,
            "deployment": self.deployment,
            "on_payload": self.on_bus_payload,
            "on_connected": self.resync,
            "peer_hold_seconds": self.config["NODE_TIMEOUT_SECONDS"],
        }
        if kind == "redis":
            channel = self.config["BUS_CHANNEL"] or redis_channel(self.deployment)
            return RedisBus(self.config["REDIS_URL"], channel, **callbacks)
        if kind != "postgres":
            raise ValueError(f"CHAT_BUS must be postgres, redis or auto, not {kind!r}")
        return PostgresBus(self.config["DATABASE_URL"], self.pool, **callbacks)

    # --- messages in --------------------------------------------------------------------------

    def _committed(self, messages: list[StoredMessage]) -> None:
        """Our own commit: deliver here at once, and announce where the bus needs it."""
        if len(messages) == 1:
            self.hub.deliver(messages[0])  # a frame per client: nothing to join
        else:
            with coalesced():  # a client in several of the batch's rooms: one write
                for message in messages:
                    self.hub.deliver(message)
        self.bus.publish_messages(messages)

    def on_bus_payload(self, payload: dict) -> None:
        kind = payload.get("k")
        if kind == "m":
            data = payload["d"]
            self.hub.deliver(StoredMessage(id=data["id"], seq=payload["s"], data=message_data(**_wire_to_args(data))))
        elif kind == "ref":
            gevent.spawn(self._deliver_by_id, store.messages_by_id, payload["id"])
        elif kind == "e":
            self.hub.deliver(stored_event_of(payload))
        elif kind == "eref":
            gevent.spawn(self._deliver_by_id, event_store.events_by_id, payload["id"])
        elif kind in ("p", "t"):
            self.deliver_event(payload)
        elif kind == "read":
            self.deliver_read(payload)
        elif kind == "member":
            if payload["userId"] in self.hub.connections_by_user:
                removed = bool(payload.get("removed"))
                if removed or payload.get("ended"):
                    self.membership.ended_elsewhere(payload["room"], payload["userId"], "removed" if removed else None)
                gevent.spawn(
                    self._apply_membership,
                    payload["room"],
                    payload["userId"],
                    payload.get("invited"),
                    removed,
                    payload.get("after"),  # (absent from a node of the version before)
                )
        elif kind == "dt":
            self.deliver_dm_typing(payload)
        # "hello": a node started listening; the bus noted it, nothing to deliver

    def _apply_membership(
        self, room: str, user_id: int, invited: dict | None, removed: bool, after: int | None
    ) -> None:
        try:
            self.membership.apply(room, user_id, invited, removed, after)
        except ChatError:
            pass  # the heartbeat's membership check applies it once the database is back
        except Exception:
            log.exception("applying a membership change of user %d in %s failed", user_id, room)

    def _deliver_by_id(self, read: Callable, item_id: int) -> None:
        """Fetch one message (store.messages_by_id) or event (event_store.events_by_id) a
        payload only named, and deliver it here."""
        try:
            with self.pool.autocommit() as cur:
                found = read(cur, [item_id])
        except ChatError:
            return  # the gate's gap filling fetches it once the database is back
        for item in found:
            self.hub.deliver(item)

    def deliver_stored_event(self, event: StoredEvent) -> None:
        """Deliver our own committed edit, delete or reaction here, and announce it.

        Announced here only where the bus did not inside the transaction.
        """
        self.hub.deliver(event)
        self.bus.publish_stored_event(event)

    def deliver_event(self, payload: dict) -> None:
        """A presence or typing event: to the room's members here but that user's own."""
        room, user_id, username = payload["room"], payload["userId"], payload["username"]
        if payload["k"] == "p":
            news = self.presence.hear(payload)
            if not news:
                return  # older than one applied already, or the members here know already
            frame = protocol.presence_frame(room, payload["event"], user_id, username)
            if not news.to_everyone:
                self.hub.to_connections_in_room(news.to_these, room, user_id, text_frame(protocol.encode(frame)))
                return
        else:
            frame = protocol.typing_frame(room, user_id, username)
        self.hub.to_room_except_user(room, user_id, text_frame(protocol.encode(frame)))

    def publish_typing(self, room: str, user_id: int, username: str) -> None:
        payload = {"k": "t", "room": room, "userId": user_id, "username": username}
        self.deliver_event(payload)
        self._publish_typing(payload)

    def publish_dm_typing(self, to: int, user_id: int, username: str) -> None:
        payload = {"k": "dt", "to": to, "userId": user_id, "username": username}
        self.deliver_dm_typing(payload)
        self._publish_typing(payload)

    def _publish_typing(self, payload: dict) -> None:
        """To the other nodes, if any listens: typing is best effort, never repaired."""
        try:
            self.bus.publish_event(payload, only_if_heard=True)
        except ChatError:
            pass

    def deliver_dm_typing(self, payload: dict) -> None:
        """Typing in a DM conversation: to the recipient's connections here."""
        frame = protocol.dm_typing_frame(payload["userId"], payload["username"])
        self.hub.to_user(payload["to"], text_frame(protocol.encode(frame)))

    def publish_read(self, user_id: int, room: str | None, other: int | None, state: ReadState) -> None:
        """A user's read state after a `read`: to their connections here and elsewhere."""
        payload = {"k": "read", "userId": user_id, "d": {**state.wire(), "countedUpTo": state.counted_up_to}}
        payload.update({"room": room} if room is not None else {"with": other})
        self.deliver_read(payload)
        try:
            # Only while another node may listen, as typing: alone (the default of one
            # worker), a NOTIFY per `read` would be heard by nobody. A device on a node that
            # started a moment ago (before its hello came) can miss one; its next `read`,
            # `my_rooms` or `welcome` tells the state as it is.
            self.bus.publish_event(payload, only_if_heard=True)
        except ChatError:
            pass

    def deliver_read(self, payload: dict) -> None:
        """A read state: to every connection of its user here that was not told a later one."""
        connections = self.hub.connections_by_user.get(payload["userId"])
        if not connections:
            return
        data = payload["d"]
        frame = protocol.read_frame(
            payload.get("room"),
            payload.get("with"),
            data["lastReadId"],
            data["unread"],
            data["mentions"],
            data.get("countedUpTo"),  # (absent from a node of the version before)
        )
        encoded = text_frame(protocol.encode(frame))
        where = ("r", payload["room"]) if "room" in payload else ("d", payload["with"])
        state = (data["lastReadId"], data.get("countedUpTo") or 0)
        for conn in tuple(connections):
            if conn.read_is_news(where, state):
                conn.send_frame(encoded)

    def public_rooms(self) -> list[dict]:
        """The public rooms `rooms` lists: shared, at most ROOMS_MAX_AGE_SECONDS old, but
        never older than the last change of a room's privacy (a room turned private in SQL
        is not listed from the commit on)."""
        changes = self.privacy_changes.get()
        seen, rooms = self.rooms_list.get()
        if seen < changes:
            seen, rooms = self.rooms_list.refresh()
        return rooms

    def _read_rooms(self) -> tuple[int, list[dict]]:
        with self.pool.autocommit() as cur:
            # the count first: the list then holds every change it counts
            changes = store.privacy_changes(cur)
            return changes, store.list_rooms(cur, self.config["ROOMS_LIST_MAX"])

    def _read_privacy_changes(self) -> int:
        with self.pool.autocommit() as cur:
            return store.privacy_changes(cur)

    # --- catching up ---------------------------------------------------------------------------

    def _fetch_channel(
        self, channel: tuple, after_id: int | None, from_seq: int, up_to_seq: int | None, limit: int
    ) -> list[StoredMessage]:
        below = None if up_to_seq is None else up_to_seq + 1
        with self.pool.autocommit() as cur:
            return events.channel_after(cur, channel, after_id, below, limit, from_seq)

    def resync(self) -> None:
        """After the bus (re)connects, fetch what was committed while it was away.

        The members here are also told the joins and leaves it lost, and the memberships
        of the users here are compared with the database.
        """
        gevent.spawn(self._check_heads, True)
        self.presence.online.mark_unheard(self.hub.members_by_room)  # (by the next heartbeat)
        self.membership.full_check.mark()  # member events it lost: compared by the next heartbeat

    def _check_heads(self, at_once: bool = False) -> None:
        gates = list(self.hub.gates)
        rooms = [key[1] for key in gates if key[0] == "r"]
        pairs = [key[1:] for key in gates if key[0] == "d"]
        if not gates:
            return
        try:
            with self.pool.autocommit() as cur:
                heads = store.channel_heads(cur, rooms, pairs)
        except ChatError:
            return
        self.hub.check_heads(heads, at_once)

    def _heartbeat_forever(self) -> None:
        # Each step on its own: presence upkeep failing half-way (the pool exhausted, say)
        # must not skip the check that bounds how long a message lost by pub/sub stays
        # undelivered.
        # Memberships before presence: the rows follow the connections listed in the rooms.
        steps = (
            self.membership.reconcile,
            self._tend_presence,
            self._check_heads,
            self.presence.repair_unheard,
            self.users_online.repair,
        )
        while True:
            for step in steps:
                try:
                    step()
                except ChatError:
                    pass
                except Exception:
                    log.exception("heartbeat step %s failed", step.__name__)
            gevent.sleep(self.config["HEARTBEAT_SECONDS"])

    def _tend_presence(self) -> None:
        alive_before = self.presence.alive_others
        try:
            self.presence.heartbeat(self.local_presence)
        finally:
            # As counted by the node's refresh, even if what followed it failed.
            self.bus.note_peers(self.presence.alive_others)
            if self.presence.alive_others < alive_before:
                # A node died: a membership it committed and never published (the Redis bus
                # publishes after the commit) is found by comparing.
                self.membership.full_check.mark()

    def local_presence(self) -> dict[tuple[str, int], str]:
        """(room, user id) -> name, for every connection here listed in a room."""
        return {
            (room, conn.user_id): conn.username
            for room, members in self.hub.members_by_room.items()
            for conn in members
        }

    # --- shutdown --------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Close every connection with 1001 so clients reconnect elsewhere."""
        if self.shutting_down:
            return
        self.shutting_down = True
        connections = list(self.connections)
        log.info("shutting down: closing %d connection(s) with 1001", len(connections))
        for conn in connections:
            conn.close(1001, "server shutting down")


def prepare_pool_statements(cur) -> None:
    """What every connection of the pool prepares: the statements each connect, join,
    `read` and event (edit, delete, reaction) run, planned as prepared.PLANNER_SETTINGS says."""
    plan_as_prepared(cur)
    WELCOME_STATEMENTS.prepare(cur)
    PRESENCE_STATEMENTS.prepare(cur)
    READ_MARKS_STATEMENTS.prepare(cur)
    event_store.STATEMENTS.prepare(cur)


def _wire_to_args(data: dict) -> dict:
    return {
        "id": data["id"],
        "from_user": data["fromUser"],
        "username": data["username"],
        "content": data["content"],
        "timestamp": data["timestamp"],
        "room": data.get("room"),
        "to_user": data.get("to"),
        "client_id": data.get("clientId"),
    }


class Chat:
    """The Flask extension (`app.extensions["chat"]`): the app's ChatRuntime, made on first use.

    Nothing starts when the app is built: the runtime's pool and greenlets belong to the
    worker process that serves the first connection (gunicorn forks after loading the app).
    """

    def __init__(self, app: Flask) -> None:
        self._app = app
        self._runtime: ChatRuntime | None = None
        # Creating the runtime waits on the database (the schema check), and meanwhile other
        # connections arrive: they wait for the one runtime instead of each making their own.
        self._lock = Semaphore()
        app.extensions["chat"] = self

    def runtime(self) -> ChatRuntime:
        """The runtime, created by the first caller (after gunicorn forked the worker)."""
        if self._runtime is None:
            with self._lock:
                if self._runtime is None:
                    self._runtime = ChatRuntime(dict(self._app.config))
        return self._runtime

    @property
    def shutting_down(self) -> bool:
        return self._runtime is not None and self._runtime.shutting_down

    def shutdown(self, wait_seconds: float = 0.0) -> None:
        """Close every connection with 1001; wait up to `wait_seconds` for them to finish."""
        rt = self._runtime
        if rt is None:
            return
        rt.shutdown()
        deadline = time.monotonic() + wait_seconds
        while rt.connections and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if not rt.connections:
            try:
                rt.presence.forget_node()  # its users' leaves went out as they closed
            except ChatError:
                pass


def chat(app: Flask | None = None) -> Chat:
    """The Chat extension of `app` (by default the current one)."""
    return (app or current_app).extensions["chat"]


def get_runtime(app: Flask | None = None) -> ChatRuntime:
    """The runtime of `app` (by default the current one), created on first use."""
    return chat(app).runtime()


def shutting_down(app: Flask | None = None) -> bool:
    return chat(app).shutting_down


def shutdown_runtime(app: Flask, wait_seconds: float = 0.0) -> None:
    """Close every connection of `app`'s runtime with 1001; wait up to `wait_seconds`."""
    chat(app).shutdown(wait_seconds)
