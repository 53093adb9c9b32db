"""Who is online in which room, across every process and host, kept in PostgreSQL.

Each process (node) holds a row in chat_nodes refreshed by a heartbeat, and a row in
room_presence per (room, user) it has connections for. A user's presence event goes out
when their first connection anywhere joins a room and when their last one leaves; an
advisory lock per (room, user) makes "first" and "last" exact across nodes. A node whose
heartbeat is older than NODE_TIMEOUT_SECONDS is dead: the others remove its rows and send
the `leave` events, so a killed worker's users disappear within that bound.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import orjson
from gevent.lock import Semaphore
from psycopg2.extras import Json

from . import store
from .bus import Bus
from .db import Pool
from .errors import ChatError
from .prepared import PreparedStatements
from .protocol import listed_users
from .shared_read import SharedRead
from .store import RoomState

log = logging.getLogger(__name__)

# How long the newest presence event of a user in a room is remembered here, to refuse an
# older one heard after it. Events arrive late by their bus's delay: milliseconds, or
# seconds while a Redis publisher catches up after an outage.
EVENT_ORDER_MEMORY_SECONDS = 120.0

ALIVE = "SELECT node_id FROM chat_nodes WHERE heartbeat_at > now() - make_interval(secs => %(alive_seconds)s)"
# Whether a process other than `node_id`, alive, has the user in the room.
_OTHERS_ONLINE = f"""EXISTS (SELECT 1 FROM room_presence WHERE room = %(room)s AND user_id = %(user_id)s
                           AND node_id <> %(node_id)s AND node_id IN ({ALIVE}))"""
# The number of an announced join or leave, taken under the (room, user) advisory lock: a
# user's events are numbered in the order they were committed, which is how a node that
# hears two nodes' events about one user out of order tells the newer (see `in_order`).
_VERSION_IF = "CASE WHEN {} THEN nextval('presence_versions') END AS version"
# The announcement of a join or leave on the PostgreSQL bus: a NOTIFY inside its
# transaction, with its number (no channel: the caller publishes it after the commit).
_NOTIFY = """CASE WHEN version IS NOT NULL AND %(channel)s IS NOT NULL THEN
    pg_notify(%(channel)s, %(origin)s || '|' || (%(event)s || jsonb_build_object('v', version))::text) END"""
# Whether a new presence row stands for a join the room heard: this one (announced: the
# user's first connection, in a room small enough), or an earlier one of the user's other
# connections there (rows of dead nodes too, until they are cleaned up). A leave is
# announced when the room is small enough or its row says the room heard the join, so
# that nobody keeps seeing online a user whose join reached them before the room grew
# too crowded for presence.
_ANNOUNCED_ROW = """(%(announce)s AND NOT others.online) OR EXISTS (
    SELECT 1 FROM room_presence WHERE room = %(room)s AND user_id = %(user_id)s AND announced)"""

# The statements of joining and leaving, prepared on every connection of the pool. A join
# (Presence.enter) is one query string, so one round trip and one transaction: create the
# room if asked; take the (room, user) advisory lock, held until the end; then, in a
# statement of its own (so that its snapshot comes after the lock and sees what the
# previous holder committed), read the room's stream position, add our row unless there
# is one, and tell whether this is the user's first connection in the room anywhere,
# announcing it if so. A leave likewise removes the row, and tells (and announces) whether
# it was the user's last; one that finds no row to remove announces nothing (two tabs
# leaving at once may both find the user gone from the hub: the first announced it).
STATEMENTS = PreparedStatements(
    {
        "chat_create_room": store.CREATE_ROOM,
        "chat_presence_lock": "SELECT pg_advisory_xact_lock(hashtextextended(%(lock)s, 0))",
        "chat_enter": f"""
            WITH room AS ({store.ROOM_STATE}),
            others AS MATERIALIZED (SELECT {_OTHERS_ONLINE} AS online),
            entered AS (
                INSERT INTO room_presence (room, user_id, node_id, username, announced)
                SELECT name, %(user_id)s, %(node_id)s, %(username)s, {_ANNOUNCED_ROW} FROM room, others
                ON CONFLICT DO NOTHING RETURNING 1
            ), step AS MATERIALIZED (
                SELECT last_seq, last_id, EXISTS (SELECT 1 FROM entered) AND NOT others.online AS first
                FROM room, others
            ), told AS MATERIALIZED (
                SELECT *, {_VERSION_IF.format("first AND %(announce)s")} FROM step
            )
            SELECT last_seq, last_id, first, version, {_NOTIFY} FROM told""",
        "chat_leave": f"""
            WITH gone AS (
                DELETE FROM room_presence WHERE room = %(room)s AND user_id = %(user_id)s AND node_id = %(node_id)s
                RETURNING announced
            ), step AS MATERIALIZED (
                SELECT NOT {_OTHERS_ONLINE} AS last,
                       %(announce)s OR COALESCE((SELECT bool_or(announced) FROM gone), false) AS heard,
                       %(removed_already)s OR EXISTS (SELECT 1 FROM gone) AS was_here
            ), told AS MATERIALIZED (
                SELECT last, {_VERSION_IF.format("last AND heard AND was_here")} FROM step
            )
            SELECT last, version, {_NOTIFY} FROM told""",
        "chat_online_users": f"""
            SELECT DISTINCT ON (p.user_id) p.user_id, COALESCE(p.username, u.username, 'user' || p.user_id)
            FROM room_presence p LEFT JOIN users u ON u.id = p.user_id
            WHERE p.room = %(room)s AND p.node_id IN ({ALIVE})
            ORDER BY p.user_id""",
    },
    types={
        "room": "text",
        "user_id": "bigint",
        "node_id": "text",
        "username": "text",
        "alive_seconds": "float8",
        "lock": "text",
        "channel": "text",
        "origin": "text",
        "event": "jsonb",
        "announce": "boolean",
        "removed_already": "boolean",
    },
    settings=("SET plan_cache_mode = force_generic_plan",),
)
_EXECUTE = STATEMENTS.execute
_JOIN = "; ".join([_EXECUTE["chat_presence_lock"], _EXECUTE["chat_enter"]])
_JOIN_CREATING = "; ".join([_EXECUTE["chat_create_room"], _JOIN])
_LEAVE = "; ".join([_EXECUTE["chat_presence_lock"], _EXECUTE["chat_leave"]])


class RoomOnline:
    """Who is online in one room (user id -> name, in the order they came), as last read.

    Presence events keep it current in constant time, however large the crowd; the
    join_ack list of its first users is encoded once and kept until one of them changes,
    so that a crowd joining a room is not listed and encoded once per join.
    """

    __slots__ = ("users", "_listed", "_listed_ids")

    def __init__(self, users: dict[int, str]) -> None:
        self.users = users
        self._listed: tuple[int, orjson.Fragment] | None = None  # (how many at most, the JSON)
        self._listed_ids: set[int] = set()

    def add(self, user_id: int, username: str) -> bool:
        """Add (or rename) a user; whether the list changed."""
        if self.users.get(user_id) == username:
            return False
        if self._listed and (user_id in self._listed_ids or len(self.users) < self._listed[0]):
            self._listed = None  # a listed name changed, or the newcomer is listed too
        self.users[user_id] = username
        return True

    def remove(self, user_id: int) -> bool:
        """Remove a user; whether the list changed."""
        if self.users.pop(user_id, None) is None:
            return False
        if user_id in self._listed_ids:
            self._listed = None  # the next one moves up into the list
        return True

    def listed(self, max_users: int) -> orjson.Fragment:
        """The JSON array of the first `max_users` users as join_ack lists them."""
        if self._listed is None or self._listed[0] != max_users:
            entries = listed_users(self.users, max_users)
            self._listed_ids = {entry["userId"] for entry in entries}
            self._listed = (max_users, orjson.Fragment(orjson.dumps(entries)))
        return self._listed[1]


class Entered(NamedTuple):
    """What a join's statement found: see Presence.enter."""

    state: RoomState
    announced: list[dict]
    online: RoomOnline


class KeyedLocks:
    """One lock per key, existing only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[object, list] = {}  # key -> [lock, holders and waiters]

    @contextmanager
    def hold(self, key: object) -> Iterator[None]:
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = [Semaphore(), 0]
        entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if not entry[1]:
                del self._locks[key]


class Presence:
    def __init__(
        self,
        pool: Pool,
        bus: Bus,
        node_id: str,
        node_timeout_seconds: float,
        deliver_event: Callable[[dict], None],
        max_announced_room_size: int = 500,
        online_cache_seconds: float = 1.0,
    ) -> None:
        self.pool = pool
        self.bus = bus
        self.node_id = node_id
        self.node_timeout = node_timeout_seconds
        self.deliver_event = deliver_event
        # (room, user_id, username) whose leave could not be written (database away)
        self.unsaved_leaves: set[tuple[str, int, str]] = set()
        # (room, user_id, username) of this process to write again after the others
        # buried it (see heartbeat)
        self.unsaved_entries: set[tuple[str, int, str]] = set()
        # (room, user_id, username, dead node, heard_join): leaves of buried nodes' users
        # not announced yet
        self.unsaved_burial_leaves: set[tuple[str, int, str, str, bool]] = set()
        # (room, user_id, username) of joins that failed without telling whether they were
        # committed (a connection lost after the commit): a row no connection stands for
        # would show the user online for good (see heartbeat)
        self.unsure_entries: set[tuple[str, int, str]] = set()
        # In rooms with more users online than this, joins and leaves are not announced:
        # 10,000 people joining one room would otherwise be 50 million presence frames.
        self.max_announced_room_size = max_announced_room_size
        # room -> who is online there: read at most this often per room, by one greenlet
        # while the others wait for it, so that a crowd joining does not read the crowd
        # once per join.
        self.online_cache_seconds = online_cache_seconds
        self.online_by_room: dict[str, SharedRead[RoomOnline]] = {}
        # room -> the presence events noted while its list is being read: the read may
        # come from a snapshot taken before they were committed, and replaces the list
        # they were noted in (see _read_online_users)
        self._noted_while_reading: dict[str, list[tuple[str, int, str]]] = {}
        # rooms whose presence events the bus may have lost here (see mark_unheard)
        self.unheard_rooms: set[str] = set()
        # (room, user_id) -> held while this process changes that user's presence there
        # (see `changing`)
        self._changing = KeyedLocks()
        # (room, user_id) -> (number, time.monotonic()) of the newest presence event heard
        # here about that user in that room, the least recently heard first (see in_order)
        self._newest_events: OrderedDict[tuple[str, int], tuple[int, float]] = OrderedDict()
        # time.monotonic() of our node row's last refresh (see heartbeat), and how many
        # other nodes were alive then
        self._beaten_at = 0.0
        self.alive_others = 0

    def changing(self, room: str, user_id: int):
        """Hold while a connection of the user joins or leaves the room in this process.

        A join holds it from its statement until the hub lists the connection, a leave
        from asking the hub whether another tab of the user is still in the room until its
        statement is done: so this process's joins and leaves of one user and room happen
        one after the other, and a tab joining while another leaves is never announced
        gone. Across processes the advisory lock of the statements orders them.
        """
        return self._changing.hold((room, user_id))

    def enter(self, room: str, user_id: int, username: str, create_room: bool) -> Entered | None:
        """Record the user here in the room (created first if `create_room`): one round trip.

        Returns the room's stream position, the announcements to pass to `after_commit`
        and who was online (read before, so that answering the join needs no more I/O),
        or None when the room does not exist. A join is announced only when this process
        had no row for the user yet and no other process has one; the statement runs under
        the (room, user) advisory lock, so two tabs joining at once on two processes take
        turns and the second finds the first one's row.
        """
        online = self.online_users(room)
        event = {"k": "p", "room": room, "event": "join", "userId": user_id, "username": username}
        announce = self._announced_in(online, user_id)
        try:
            with self.pool.autocommit() as cur:
                cur.execute(
                    _JOIN_CREATING if create_room else _JOIN,
                    self._parameters(room, user_id, username, event, self.node_id, announce),
                )
                row = cur.fetchone()
        except ChatError:
            self.unsure_entries.add((room, user_id, username))
            raise
        if row is None:
            return None
        last_seq, last_id, first, version = row[:4]
        return Entered(RoomState(last_seq, last_id), self._after_statement(first, version, event), online)

    def leave(self, room: str, user_id: int, username: str, retried: bool = False) -> None:
        """Forget the user here in the room, announcing it if no connection of theirs
        remains anywhere: one round trip, under the (room, user) advisory lock.

        `retried`: an earlier attempt failed, perhaps after its commit (its answer lost):
        the row may be gone already, and the leave was not announced here.
        """
        try:
            announced = self._leave(room, user_id, username, self.node_id, removed_already=retried)
        except ChatError:
            self.unsaved_leaves.add((room, user_id, username))
            return
        self.unsaved_leaves.discard((room, user_id, username))
        self.after_commit(announced)

    def _leave(
        self,
        room: str,
        user_id: int,
        username: str,
        node_id: str,
        heard_join: bool = False,
        removed_already: bool = False,
    ) -> list[dict]:
        """Remove `node_id`'s row of the user in the room; the announcements to make.

        Another node's leave is a buried node's, whose rows the burial removed already;
        `heard_join`: the room heard the user's join, from such a row.
        """
        event = {"k": "p", "room": room, "event": "leave", "userId": user_id, "username": username}
        announce = heard_join or self._announced_in(self.online_users(room), user_id)
        parameters = self._parameters(room, user_id, username, event, node_id, announce)
        parameters["removed_already"] = removed_already or node_id != self.node_id
        with self.pool.autocommit() as cur:
            cur.execute(_LEAVE, parameters)
            last, version = cur.fetchone()[:2]
        return self._after_statement(last, version, event)

    def _parameters(self, room: str, user_id: int, username: str, event: dict, node_id: str, announce: bool) -> dict:
        return statement_parameters(
            room,
            user_id,
            username,
            node_id,
            self.node_timeout,
            announce,
            # announced inside the transaction on the PostgreSQL bus (after it, on others)
            self.bus.notify_channel,
            self.bus.origin,
            event,
        )

    def _after_statement(self, changed: bool, version: int | None, event: dict) -> list[dict]:
        """The announcements of a committed join or leave (`changed`: the user's first or
        last anywhere); when it is not announced (a crowded room), only the cached list
        changes."""
        if not changed:
            return []
        if version is not None:
            return [{**event, "v": version}]
        self.note(event["room"], event["event"], event["userId"], event["username"])
        return []

    def after_commit(self, announced: list[dict]) -> None:
        """Deliver the announcements of a committed transaction here (and publish them)."""
        for payload in announced:
            if not self.bus.notify_channel:
                self.bus.publish_event(payload)
            self.deliver_event(payload)

    def _announced_in(self, online: RoomOnline, user_id: int) -> bool:
        """Whether the room, counting this user, is small enough for presence events."""
        return len(online.users) + (user_id not in online.users) <= self.max_announced_room_size

    def online_users(self, room: str) -> RoomOnline:
        """Who is online in the room, cluster-wide (read at most once a second per room,
        by one greenlet while the others wait for it; presence events keep it current in
        between)."""
        shared = self.online_by_room.get(room)
        if shared is None:
            if len(self.online_by_room) > 10_000:
                self.online_by_room.clear()
            shared = self.online_by_room[room] = SharedRead(
                functools.partial(self._read_online_users, room), self.online_cache_seconds
            )
        return shared.get()

    def online_now(self, room: str, read: RoomOnline) -> RoomOnline:
        """The room's list as it stands now, with every presence event noted so far: the
        newest list read (another greenlet may have read it again since `read` was), or
        `read`. No I/O: for answering a join, whose later events reach the joiner."""
        shared = self.online_by_room.get(room)
        latest = shared.latest if shared is not None else None
        return latest if latest is not None else read

    def in_order(self, payload: dict) -> bool:
        """Whether a presence event is newer than any other heard here about its user in
        its room, and so is to be applied (it is then remembered as the newest).

        A user's leave on one node and their next join on another (a page reloaded onto
        another worker) are committed in that order, numbered under the (room, user)
        lock, but each node announces its own: where the leave arrives second (its
        node's link to Redis slow, or the join delivered here at once while our listener
        is behind), it would show the user gone for good. Events without a number are
        applied.
        """
        version = payload.get("v")
        if version is None:
            return True
        key = (payload["room"], payload["userId"])
        newest = self._newest_events.get(key)
        if newest is not None and newest[0] >= version:
            return False
        now = time.monotonic()
        self._newest_events[key] = (version, now)
        self._newest_events.move_to_end(key)
        horizon = now - EVENT_ORDER_MEMORY_SECONDS
        while self._newest_events and next(iter(self._newest_events.values()))[1] < horizon:
            self._newest_events.popitem(last=False)
        return True

    def note(self, room: str, event: str, user_id: int, username: str) -> bool:
        """Keep the cached list of a room current with a presence event heard or sent.

        Returns whether the event is news to the room's members here, which is what the
        list stands for (see `_read_online_users`): False when it changes nothing (a join
        of someone listed already: a re-read or another node told it first).
        """
        noted = self._noted_while_reading.get(room)
        if noted is not None:
            noted.append((event, user_id, username))
        shared = self.online_by_room.get(room)
        cached = shared.latest if shared is not None else None
        if cached is None:
            return True
        return _apply(cached, event, user_id, username)

    def _read_online_users(self, room: str) -> RoomOnline:
        """Read the list, apply the events noted meanwhile, and tell the room's members
        here how it differs from the list it replaces.

        Its snapshot may predate an event that was committed elsewhere and noted here
        while the query ran, in the list this read replaces: without them, the user
        would stay missing (or, for a leave, online) in every join_ack until the next
        read, and to the joiners for good. Events already in the snapshot apply again
        harmlessly, in the order they were committed.

        The list replaced is what the members here were told (join_acks from it, then
        every event that changed it): a difference is an event they missed (lost with
        the bus during an outage, see `mark_unheard`) or one still on its way (then
        not told twice: `note`).
        """
        noted = self._noted_while_reading.setdefault(room, [])
        try:
            with self.pool.autocommit() as cur:
                cur.execute(_EXECUTE["chat_online_users"], {"room": room, "alive_seconds": self.node_timeout})
                online = RoomOnline(dict(cur.fetchall()))
        finally:
            self._noted_while_reading.pop(room, None)
        for event, user_id, username in noted:
            _apply(online, event, user_id, username)
        shared = self.online_by_room.get(room)
        told = shared.latest if shared is not None else None
        if told is not None:
            self._tell_differences(room, told, online)
        return online

    def _tell_differences(self, room: str, told: RoomOnline, online: RoomOnline) -> None:
        """Deliver here, as presence events, what turns the list `told` into `online`
        (not in rooms too crowded for presence, where nobody was told anything)."""
        if max(len(told.users), len(online.users)) > self.max_announced_room_size:
            return
        before, after = told.users, online.users
        differences = [("leave", user_id, name) for user_id, name in before.items() if user_id not in after]
        differences += [("join", user_id, name) for user_id, name in after.items() if before.get(user_id) != name]
        for event, user_id, username in differences:
            # Without a number: the list read is newer than any event applied so far.
            self.deliver_event({"k": "p", "room": room, "event": event, "userId": user_id, "username": username})

    def mark_unheard(self, rooms: Iterable[str]) -> None:
        """The bus was away: presence events of these rooms may have been lost here."""
        self.unheard_rooms.update(rooms)

    def repair_unheard(self) -> None:
        """Read again the lists of the rooms marked unheard, which tells their members here
        the joins and leaves they missed (see `_read_online_users`).

        A step of the heartbeat, after the one that writes our users again if the others
        buried us meanwhile: read before that, the lists would tell our own clients that
        our users left, then that they came back. (A failure leaves the rooms marked.)
        """
        if self.unsaved_entries:
            return  # not all written again yet
        for room in sorted(self.unheard_rooms):
            shared = self.online_by_room.get(room)
            if shared is not None:
                shared.refresh()
            self.unheard_rooms.discard(room)

    # --- the heartbeat ---------------------------------------------------------------------------

    def heartbeat(
        self,
        local_presence: Callable[[], set[tuple[str, int, str]]],
        user_in_room: Callable[[int, str], bool],
    ) -> int:
        """Refresh our node, write again what could not be written, undo joins committed
        though they failed here (unsure_entries), and bury nodes that stopped beating.

        `local_presence()` lists (room, user id, name) of this process's connections;
        `user_in_room(user_id, room)` says whether one of the user's connections here is
        in the room now. Each write looks at it under the (room, user) lock, since joins
        and leaves go on during the heartbeat's round trips. Returns how many other nodes
        are alive.
        """
        alive_others = self._beat(local_presence)
        for entry in sorted(self.unsaved_entries):
            self._beat_if_due(local_presence)
            room, user_id, username = entry
            with self.changing(room, user_id):
                if user_in_room(user_id, room):
                    entered = self.enter(room, user_id, username, create_room=False)
                    if entered is not None:
                        self.after_commit(entered.announced)
            self.unsaved_entries.discard(entry)  # written, or left meanwhile
        for entry in list(self.unsaved_leaves):
            self._beat_if_due(local_presence)
            room, user_id, username = entry
            with self.changing(room, user_id):
                if user_in_room(user_id, room):
                    self.unsaved_leaves.discard(entry)  # back here: the row stands for them
                else:
                    self.leave(room, user_id, username, retried=True)
        for entry in sorted(self.unsure_entries):
            self._beat_if_due(local_presence)
            room, user_id, username = entry
            with self.changing(room, user_id):
                if not user_in_room(user_id, room) and self._has_row(room, user_id):
                    self.leave(room, user_id, username)  # the join was committed after all
            self.unsure_entries.discard(entry)
        self._bury_dead_nodes()
        for burial in sorted(self.unsaved_burial_leaves):
            self._beat_if_due(local_presence)
            self.after_commit(self._leave(*burial))
            self.unsaved_burial_leaves.discard(burial)
        return alive_others

    def _beat(self, local_presence: Callable[[], set[tuple[str, int, str]]]) -> int:
        """Refresh our node's row; return how many other nodes are alive."""
        with self.pool.autocommit() as cur:
            cur.execute(
                f"""INSERT INTO chat_nodes (node_id) VALUES (%(node_id)s)
                    ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = now()
                    RETURNING (xmax = 0), (SELECT count(*) FROM ({ALIVE}) AS alive WHERE node_id <> %(node_id)s)""",
                {"node_id": self.node_id, "alive_seconds": self.node_timeout},
            )
            was_missing, alive_others = cur.fetchone()
        self._beaten_at = time.monotonic()
        self.alive_others = alive_others
        if was_missing:
            # New, or buried by the others while we could not beat: say again who is here
            # (kept until written: a failure half-way must not leave the rest unwritten).
            self.unsaved_entries.update(local_presence())
        return alive_others

    def _beat_if_due(self, local_presence: Callable[[], set[tuple[str, int, str]]]) -> None:
        """Refresh our node's row again during a long heartbeat.

        Writing thousands of users again (after a burial, say) takes a round trip or two
        each: longer than the node timeout, and the others would bury us again before we
        were done, and again after that.
        """
        if time.monotonic() - self._beaten_at >= self.node_timeout / 4:
            self._beat(local_presence)

    def _has_row(self, room: str, user_id: int) -> bool:
        with self.pool.autocommit() as cur:
            cur.execute(
                "SELECT 1 FROM room_presence WHERE room = %s AND user_id = %s AND node_id = %s",
                (room, user_id, self.node_id),
            )
            return cur.fetchone() is not None

    def _bury_dead_nodes(self) -> None:
        """Remove the rows of nodes that stopped beating, and announce their users' leaves
        (those whose announcement fails are kept for the next heartbeat: the rows are gone)."""
        with self.pool.transaction() as cur:
            cur.execute(
                """DELETE FROM chat_nodes WHERE heartbeat_at < now() - make_interval(secs => %s)
                   RETURNING node_id""",
                (self.node_timeout,),
            )
            dead = [row[0] for row in cur]
            if not dead:
                return
            cur.execute(
                """WITH p AS (DELETE FROM room_presence WHERE node_id = ANY(%s) RETURNING *)
                   SELECT p.room, p.user_id,
                          COALESCE(max(p.username), (SELECT username FROM users u WHERE u.id = p.user_id)),
                          bool_or(p.announced)
                   FROM p GROUP BY p.room, p.user_id ORDER BY p.room, p.user_id""",
                (dead,),
            )
            gone = [(room, user_id, username or f"user{user_id}", heard) for room, user_id, username, heard in cur]
        log.info("buried %d dead node(s): %s", len(dead), ", ".join(dead))
        # The leave of a dead node's connection: is the user still online on a live one
        # (this one included)?
        self.unsaved_burial_leaves.update(
            (room, user_id, username, dead[0], heard) for room, user_id, username, heard in gone
        )

    def forget_node(self) -> None:
        """On shutdown: remove our node and presence rows (the leaves were sent already)."""
        with self.pool.transaction() as cur:
            cur.execute("DELETE FROM room_presence WHERE node_id = %s", (self.node_id,))
            cur.execute("DELETE FROM chat_nodes WHERE node_id = %s", (self.node_id,))


def _dumps_text(value: object) -> str:
    return orjson.dumps(value).decode()


def _apply(online: RoomOnline, event: str, user_id: int, username: str) -> bool:
    """Apply a presence event to a list; whether it changed."""
    if event == "join":
        return online.add(user_id, username)
    return online.remove(user_id)


def statement_parameters(
    room: str,
    user_id: int,
    username: str,
    node_id: str,
    alive_seconds: float,
    announce: bool,
    channel: str | None,
    origin: str,
    event: dict,
) -> dict:
    """The parameters of the join and leave statements.

    `announce`: the room is small enough for presence events; `channel`: where the
    statement NOTIFYs the event it announces (None: the caller publishes it).
    """
    return {
        "room": room,
        "user_id": user_id,
        "username": username,
        "node_id": node_id,
        "alive_seconds": alive_seconds,
        "lock": f"presence:{room}:{user_id}",
        "announce": announce,
        "channel": channel,
        "origin": origin,
        "event": Json(event, dumps=_dumps_text),
        "removed_already": False,
    }
