"""Who is online in which room, across every process and host, kept in PostgreSQL.

Each process (node) holds a row in chat_nodes refreshed by a heartbeat, and a row in
room_presence per (room, user) it has connections for. A user's presence event goes out
when their first connection anywhere joins a room and when their last one leaves; an
advisory lock per (room, user) makes "first" and "last" exact across nodes. A node whose
heartbeat is older than NODE_TIMEOUT_SECONDS is dead: the others remove its rows and send
the `leave` events, so a killed worker's users disappear within that bound. What each
process has read and told of these rows is online.py's.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import orjson
from gevent.lock import Semaphore
from psycopg2.extras import Json

from . import store
from .bus import Bus
from .db import Pool
from .errors import ChatError
from .online import OnlineLists, RoomOnline
from .prepared import PreparedStatements
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

# Whether a process other than `node_id`, dead or alive, has a row of the user in the room:
# each room's count of users online (room_online, what `rooms` lists) changes with the
# user's first row there and their last.
_OTHER_ROWS = """EXISTS (SELECT 1 FROM room_presence WHERE room = %(room)s AND user_id = %(user_id)s
                        AND node_id <> %(node_id)s)"""

# The statements of joining and leaving, prepared on every connection of the pool. A join
# (Presence.enter) is one query string, so one round trip and one transaction: create the
# room if asked; take the (room, user) advisory lock, held until the end, and lock the
# user's rows in the room (a burial removing one waits for us, or we for it: see
# Presence._remove_rows); then, in a statement of its own (so that its snapshot comes
# after the locks and sees what the previous holder committed), read the room's stream
# position, add our row unless there is one, count the user in the room if it is their
# first row, and tell whether this is the user's first connection in the room on a live
# node, announcing it if so. A leave likewise removes the row, uncounts the user if it was
# their last, and tells (and announces) whether it was the last; one that finds no row to
# remove announces nothing (two tabs leaving at once may both find the user gone from the
# hub: the first announced it).
STATEMENTS = PreparedStatements(
    {
        "chat_lock_creator": store.LOCK_CREATOR,
        "chat_create_room": store.CREATE_ROOM,
        "chat_presence_lock": "SELECT pg_advisory_xact_lock(hashtextextended(%(lock)s, 0))",
        "chat_presence_rows": """SELECT 1 FROM room_presence WHERE room = %(room)s AND user_id = %(user_id)s
                                 ORDER BY node_id FOR UPDATE""",
        "chat_enter": f"""
            WITH room AS ({store.ROOM_STATE}),
            others AS MATERIALIZED (SELECT {_OTHERS_ONLINE} AS online),
            entered AS (
                INSERT INTO room_presence (room, user_id, node_id, username, announced)
                SELECT name, %(user_id)s, %(node_id)s, %(username)s, {_ANNOUNCED_ROW} FROM room, others
                ON CONFLICT DO NOTHING RETURNING 1
            ), counted AS (
                INSERT INTO room_online AS o (room, online)
                SELECT name, 1 FROM room WHERE EXISTS (SELECT 1 FROM entered) AND NOT {_OTHER_ROWS}
                ON CONFLICT (room) DO UPDATE SET online = o.online + 1
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
            ), uncounted AS (
                UPDATE room_online SET online = online - 1
                WHERE room = %(room)s AND EXISTS (SELECT 1 FROM gone) AND NOT {_OTHER_ROWS}
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
        "rooms_per_minute": "integer",
    },
    settings=("SET plan_cache_mode = force_generic_plan",),
)
_EXECUTE = STATEMENTS.execute
_LOCKS = [_EXECUTE["chat_presence_lock"], _EXECUTE["chat_presence_rows"]]
_JOIN = "; ".join([*_LOCKS, _EXECUTE["chat_enter"]])
_JOIN_CREATING = "; ".join([_EXECUTE["chat_lock_creator"], _EXECUTE["chat_create_room"], _JOIN])
_LEAVE = "; ".join([*_LOCKS, _EXECUTE["chat_leave"]])


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
        user_here: Callable[[int, str], bool] = lambda user_id, room: False,
        rooms_per_minute: int = 0,
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
        # Rooms a user may create a minute (0: no limit), counted in the database.
        self.rooms_per_minute = rooms_per_minute
        # who is online in each room, as this process has told its members
        self.online = OnlineLists(
            self._read_online_users, deliver_event, max_announced_room_size, online_cache_seconds, user_here
        )
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
        online = self.online.get(room)
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
        announce = heard_join or self._announced_in(self.online.get(room), user_id)
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
            self.rooms_per_minute,
        )

    def _after_statement(self, changed: bool, version: int | None, event: dict) -> list[dict]:
        """The announcements of a committed join or leave (`changed`: the user's first or
        last anywhere); when it is not announced (a crowded room), only the cached list
        changes."""
        if not changed:
            return []
        if version is not None:
            return [{**event, "v": version}]
        self.online.note(event["room"], event["event"], event["userId"], event["username"])
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

    def _read_online_users(self, room: str) -> dict[int, str]:
        with self.pool.autocommit() as cur:
            cur.execute(_EXECUTE["chat_online_users"], {"room": room, "alive_seconds": self.node_timeout})
            return dict(cur.fetchall())

    def repair_unheard(self) -> None:
        """Tell the members here the joins and leaves the bus lost (OnlineLists.repair_unheard).

        A step of the heartbeat, after the one that writes our users again if the others
        buried us meanwhile: read before that, the lists would tell our own clients that
        our users left, then that they came back.
        """
        if not self.unsaved_entries:
            self.online.repair_unheard()

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
            gone = _remove_rows(cur, dead)
        log.info("buried %d dead node(s): %s", len(dead), ", ".join(dead))
        # The leave of a dead node's connection: is the user still online on a live one
        # (this one included)?
        self.unsaved_burial_leaves.update(
            (room, user_id, username, dead[0], heard) for room, user_id, username, heard in gone
        )

    def forget_node(self) -> None:
        """On shutdown: remove our node and presence rows (the leaves were sent already)."""
        with self.pool.transaction() as cur:
            _remove_rows(cur, [self.node_id])
            cur.execute("DELETE FROM chat_nodes WHERE node_id = %s", (self.node_id,))


def _remove_rows(cur, nodes: list[str]) -> list[tuple[str, int, str, bool]]:
    """Remove the presence rows of `nodes` (rooms and users) and count again the users online in their rooms,
    in the caller's transaction; returns (room, user id, name, heard_join) per user removed.

    Without the advisory locks of joins and leaves (a dead node may have thousands of
    users, more locks than PostgreSQL's lock table holds), yet exact: a join or leave locks
    every row of its user in the room, a dead node's too, so removing such a row waits for
    one under way (or it for the removal); and each room's count is then locked (after its
    row is made sure of, so that no join inserts it after our snapshot) and taken again from
    the rows, each statement seeing what the previous one waited for.
    """
    cur.execute("DELETE FROM user_presence WHERE node_id = ANY(%s)", (nodes,))
    cur.execute(
        """WITH p AS (DELETE FROM room_presence WHERE node_id = ANY(%s) RETURNING *)
           SELECT p.room, p.user_id,
                  COALESCE(max(p.username), (SELECT username FROM users u WHERE u.id = p.user_id)),
                  bool_or(p.announced)
           FROM p GROUP BY p.room, p.user_id ORDER BY p.room, p.user_id""",
        (nodes,),
    )
    gone = [(room, user_id, username or f"user{user_id}", heard) for room, user_id, username, heard in cur]
    rooms = sorted({room for room, *_ in gone})
    if rooms:
        cur.execute(
            """INSERT INTO room_online (room, online) SELECT unnest(%(rooms)s::text[]), 0 ON CONFLICT DO NOTHING;
               SELECT 1 FROM room_online WHERE room = ANY(%(rooms)s) ORDER BY room FOR UPDATE""",
            {"rooms": rooms},
        )
        cur.execute(
            """UPDATE room_online o SET online = (SELECT count(DISTINCT user_id) FROM room_presence p
                                                  WHERE p.room = o.room)
               WHERE o.room = ANY(%s)""",
            (rooms,),
        )
    return gone


def _dumps_text(value: object) -> str:
    return orjson.dumps(value).decode()


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
    rooms_per_minute: int = 0,
) -> dict:
    """The parameters of the join and leave statements.

    `announce`: the room is small enough for presence events; `channel`: where the
    statement NOTIFYs the event it announces (None: the caller publishes it);
    `rooms_per_minute`: how many rooms the user may create a minute (0: no limit).
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
        "rooms_per_minute": rooms_per_minute,
    }
