"""Membership and who is online in which room, across every process and host, in PostgreSQL.

Membership is the user's (chat_members): `join` and `leave` change it, each in one
transaction with the presence it implies. A user is online in a room while they are a
member with a connection anywhere: each process (node) holds a row in chat_nodes refreshed
by a heartbeat, and a row in room_presence per (room, user) it has connections of a member
for. A user's presence event goes out when their first connection anywhere comes (or their
membership starts) and when their last one goes (or it ends); an advisory lock per (room,
user) makes "first" and "last" exact across nodes. Every heartbeat reconciles this node's
rows with its connections. A node whose heartbeat is older than NODE_TIMEOUT_SECONDS is
dead: the others remove its rows and send the `leave` events, so a killed worker's users
disappear within that bound. What each process has read and told of these rows is online.py's.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import gevent
import orjson
import psycopg2
from psycopg2.extras import Json

from . import store
from .batched import Batched
from .bus import Bus
from .db import BigintArray, BoolArray, Pool, TextArray
from .errors import ChatError
from .full_check import FullCheck
from .keyed_locks import KeyedLocks
from .online import NOBODY, News, OnlineLists, RoomOnline, presence_event
from .prepared import PreparedStatements
from .store import RoomState
from .transport import coalesced

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

# Whether this node may remove the row of `node_id`: its own, or a dead node's (a node
# taken for dead that beats again keeps its rows: it is alive).
_REMOVABLE = f"NOT (%(only_if_dead)s AND %(node_id)s <> %(me)s AND %(node_id)s IN ({ALIVE}))"
# Whether a process other than `node_id`, dead or alive, has a row of the user in the room:
# each room's count of users online (room_online, what `rooms` lists) changes with the
# user's first row there and their last.
_OTHER_ROWS = """EXISTS (SELECT 1 FROM room_presence WHERE room = %(room)s AND user_id = %(user_id)s
                        AND node_id <> %(node_id)s)"""
# The announcements of a membership that began or ended, on the PostgreSQL bus, inside
# its transaction: the user's connections on other nodes follow it (app/membership.py).
# One that began says `after`, the room's last id then: every later message is the
# user's, and reaches their connections elsewhere even if it gets there before this
# event. One that ended by a leave says `ended`: those connections stop receiving the
# room at once, before any later message.
_NOTIFY_MEMBER = """CASE WHEN member_changed AND %(channel)s IS NOT NULL THEN
    pg_notify(%(channel)s, %(origin)s || '|' || json_build_object('k', 'member', 'room', %(room)s,
                                                                  'userId', %(user_id)s{})::text) END"""
_NOTIFY_MEMBER_BEGAN = _NOTIFY_MEMBER.format(", 'after', last_id")
_NOTIFY_MEMBER_ENDED = _NOTIFY_MEMBER.format(", 'ended', true")
# The same for an invitation or a removal (PROTOCOL.md §8), whose event carries what the
# user's connections are told: built by the caller (Memberships), as it is published on
# buses that cannot announce inside the transaction.
_NOTIFY_MEMBER_EVENT = """CASE WHEN member_changed AND %(channel)s IS NOT NULL THEN
    pg_notify(%(channel)s, %(origin)s || '|' || %(member_event)s::text) END"""
# A user's presence row here, in a room they are a member of: the first CTEs say which room
# (`room`: name, last_seq, last_id) and whether the membership is new (`added`).
_ENTER = f"""
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
                SELECT last_seq, last_id, EXISTS (SELECT 1 FROM entered) AND NOT others.online AS first,
                       EXISTS (SELECT 1 FROM added) AS member_changed,
                       (SELECT count(*) FROM chat_members WHERE room = %(room)s) + (SELECT count(*) FROM added)
                           AS members,
                       (SELECT user_id FROM chat_members WHERE room = %(room)s AND role = 'owner'
                        ORDER BY user_id LIMIT 1) AS owner
                FROM room, others
            ), told AS MATERIALIZED (
                SELECT *, {_VERSION_IF.format("first AND %(announce)s")} FROM step
            )
            SELECT last_seq, last_id, first, version, member_changed, members, owner, {_NOTIFY}, {_NOTIFY_MEMBER_BEGAN}
            FROM told"""


def _membership_ended(notify_member: str) -> str:
    """The end of a statement that ends a membership (its CTEs `ended`, the membership row
    removed, and `gone`, the user's presence rows): the room's count of users online, whether
    the user was here and is told gone, and the announcements (`notify_member`: of the
    membership change)."""
    return f""", uncounted AS (
                UPDATE room_online SET online = online - 1 WHERE room = %(room)s AND EXISTS (SELECT 1 FROM gone)
            ), step AS MATERIALIZED (
                SELECT EXISTS (SELECT 1 FROM ended) AS member_changed, EXISTS (SELECT 1 FROM gone) AS was_here,
                       %(announce)s OR COALESCE((SELECT bool_or(announced) FROM gone), false) AS heard
            ), told AS MATERIALIZED (
                SELECT member_changed, was_here, {_VERSION_IF.format("was_here AND heard")} FROM step
            )
            SELECT member_changed, was_here, version, {_NOTIFY}, {notify_member} FROM told"""


# The presence rows of many (room, user) pairs, after a CTE `room` with a row per pair (n,
# room, user_id, username, announce, and what the statement needs besides): as chat_enter
# writes one, each pair's row, the rooms' counts and whether each is the user's first there;
# `told` ends with every column of `room` and first and version.
_ENTER_PAIRS = f"""others AS MATERIALIZED (
                -- the pair's rows read once (one index probe), not once per question; they
                -- are locked (chat_presence_rows_many) and so is the pair: none comes or
                -- goes before the commit, so `mine` says whether ours is inserted below
                SELECT room.*, COALESCE(rows.online, false) AS online,
                       COALESCE(rows.other_rows, false) AS other_rows, COALESCE(rows.heard, false) AS heard,
                       COALESCE(rows.mine, false) AS mine
                FROM room CROSS JOIN LATERAL (
                    SELECT bool_or(p.node_id <> %(node_id)s AND p.node_id IN ({ALIVE})) AS online,
                           bool_or(p.node_id <> %(node_id)s) AS other_rows,
                           bool_or(p.announced) AS heard,
                           bool_or(p.node_id = %(node_id)s) AS mine
                    FROM room_presence p WHERE p.room = room.room AND p.user_id = room.user_id
                ) AS rows
            ), entered AS (
                INSERT INTO room_presence (room, user_id, node_id, username, announced)
                SELECT room, user_id, %(node_id)s, username, (announce AND NOT online) OR heard FROM others
                WHERE NOT mine
                ON CONFLICT DO NOTHING
            ), counted AS (
                -- From `others` alone, not joined with what the insert returned: the planner
                -- guesses a CTE at a row or two, and would join two with a nested loop,
                -- comparisons growing with the square of the batch.
                INSERT INTO room_online AS o (room, online)
                SELECT room, count(*) FROM others WHERE NOT mine AND NOT other_rows GROUP BY room ORDER BY room
                ON CONFLICT (room) DO UPDATE SET online = o.online + EXCLUDED.online
            ), step AS MATERIALIZED (
                SELECT *, NOT mine AND NOT online AS first FROM others
            ), told AS MATERIALIZED (
                SELECT *, {_VERSION_IF.format("first AND announce")} FROM step
            )"""
# The announcement of a pair's join on the PostgreSQL bus (see _NOTIFY).
_NOTIFY_PAIR = """CASE WHEN version IS NOT NULL AND %(channel)s IS NOT NULL THEN
                       pg_notify(%(channel)s, %(origin)s || '|' || jsonb_build_object(
                           'k', 'p', 'room', room, 'event', 'join', 'userId', user_id, 'username', username,
                           'v', version)::text) END"""


# The statements of membership and presence, prepared on every connection of the pool.
# Each change is one query string, so one round trip and one transaction: create the room
# if asked; take the (room, user) advisory lock, held until the end, and lock the user's
# rows in the room (a burial removing one waits for us, or we for it); then, in a statement
# of its own (so that its snapshot comes after the locks and sees what the previous holder
# committed), the change itself. Each keeps the room's count of users online (room_online)
# with the user's first row there and their last:
# - chat_join: make the user a member (unless they are), add this node's presence row
#   unless there is one, read the room's stream position, and tell whether this is the
#   user's first connection in the room anywhere, announcing it if so. A worker killed
#   before the commit leaves neither the membership nor the row.
# - chat_enter: the same for a member only (the heartbeat's reconcile, a membership made
#   on another node): a user who is no longer a member gets no row.
# - chat_leave: remove one node's row (ours, or a dead node's), telling (and announcing)
#   whether it was the user's last anywhere; one that finds no row to remove changes and
#   announces nothing (the heartbeat may find a row that a leave has just removed, two
#   nodes may bury one dead node at once): the remover's event, maybe still on its way,
#   is the one to tell.
# - chat_end_membership: end the membership and remove every node's row of the user in
#   the room: they are online there nowhere now; the membership's end was not a removal.
# - chat_invite: make the user a member if `by` is one (no presence row: each node with a
#   connection of theirs enters them, Memberships.apply).
# - chat_remove: chat_end_membership, if `by` owns the room (and the user does not),
#   noting the removal (chat_removals) for a node that finds the membership gone untold.
STATEMENTS = PreparedStatements(
    {
        "chat_lock_creator": store.LOCK_CREATOR,
        "chat_create_room": store.CREATE_ROOM,
        "chat_presence_lock": "SELECT pg_advisory_xact_lock(hashtextextended(%(lock)s, 0))",
        "chat_presence_rows": """SELECT 1 FROM room_presence WHERE room = %(room)s AND user_id = %(user_id)s
                                 ORDER BY node_id FOR UPDATE""",
        "chat_join": f"""
            WITH room AS ({store.ROOM_STATE}),
            added AS (
                INSERT INTO chat_members (room, user_id, last_read_id) SELECT name, %(user_id)s, last_id FROM room
                ON CONFLICT DO NOTHING RETURNING 1
            ),{_ENTER}""",
        "chat_enter": f"""
            WITH room AS ({store.ROOM_STATE}
                          AND EXISTS (SELECT 1 FROM chat_members m WHERE m.room = r.name AND m.user_id = %(user_id)s)),
            added AS (SELECT 1 WHERE false),{_ENTER}""",
        "chat_leave": f"""
            WITH gone AS (
                DELETE FROM room_presence WHERE room = %(room)s AND user_id = %(user_id)s AND node_id = %(node_id)s
                                                AND {_REMOVABLE}
                RETURNING announced
            ), uncounted AS (
                UPDATE room_online SET online = online - 1
                WHERE room = %(room)s AND EXISTS (SELECT 1 FROM gone) AND NOT {_OTHER_ROWS}
            ), step AS MATERIALIZED (
                SELECT NOT {_OTHERS_ONLINE} AS last,
                       %(announce)s OR COALESCE((SELECT bool_or(announced) FROM gone), false) AS heard,
                       EXISTS (SELECT 1 FROM gone) AS was_here
            ), told AS MATERIALIZED (
                SELECT last AND was_here AS last, {_VERSION_IF.format("last AND heard AND was_here")} FROM step
            )
            SELECT last, version, {_NOTIFY} FROM told""",
        "chat_end_membership": f"""
            WITH ended AS (
                DELETE FROM chat_members WHERE room = %(room)s AND user_id = %(user_id)s RETURNING 1
            ), gone AS (
                DELETE FROM room_presence WHERE room = %(room)s AND user_id = %(user_id)s RETURNING announced
            ), not_removed AS (
                DELETE FROM chat_removals WHERE room = %(room)s AND user_id = %(user_id)s
                                            AND EXISTS (SELECT 1 FROM ended)
            ){_membership_ended(_NOTIFY_MEMBER_ENDED)}""",
        "chat_invite": f"""
            WITH room AS MATERIALIZED (
                SELECT r.name, {store.ROOM_LAST_ID.format("r.name")} AS last_id FROM rooms r WHERE r.name = %(room)s
            ), added AS (
                INSERT INTO chat_members (room, user_id, last_read_id)
                SELECT name, %(user_id)s, last_id
                FROM room WHERE EXISTS (SELECT 1 FROM chat_members WHERE room = %(room)s AND user_id = %(by)s)
                ON CONFLICT DO NOTHING RETURNING 1
            ), step AS MATERIALIZED (
                SELECT EXISTS (SELECT 1 FROM added) AS member_changed, COALESCE((SELECT last_id FROM room), 0) AS after
            )
            SELECT member_changed, after, CASE WHEN member_changed AND %(channel)s IS NOT NULL THEN
                pg_notify(%(channel)s,
                          %(origin)s || '|' || (%(member_event)s || jsonb_build_object('after', after))::text) END
            FROM step""",
        "chat_remove": f"""
            WITH ended AS (
                DELETE FROM chat_members WHERE room = %(room)s AND user_id = %(user_id)s AND role <> 'owner'
                  AND EXISTS (SELECT 1 FROM chat_members WHERE room = %(room)s AND user_id = %(by)s AND role = 'owner')
                RETURNING 1
            ), gone AS (
                DELETE FROM room_presence WHERE room = %(room)s AND user_id = %(user_id)s
                                            AND EXISTS (SELECT 1 FROM ended)
                RETURNING announced
            ), removal AS (
                INSERT INTO chat_removals (room, user_id) SELECT %(room)s, %(user_id)s FROM ended
                ON CONFLICT DO NOTHING
            ){_membership_ended(_NOTIFY_MEMBER_EVENT)}""",
        "chat_lock_many": """SELECT pg_advisory_xact_lock(hashtextextended(lock, 0))
            FROM (SELECT 'presence:' || room || ':' || user_id AS lock
                  FROM unnest(%(rooms)s, %(user_ids)s) AS pair(room, user_id) ORDER BY 1 OFFSET 0) AS sorted""",
        # each pair's rows by the primary key (a join could scan the whole table)
        "chat_presence_rows_many": """SELECT 1
            FROM (SELECT * FROM unnest(%(rooms)s, %(user_ids)s) AS pair(room, user_id) ORDER BY 1, 2 OFFSET 0) AS pair
            CROSS JOIN LATERAL (SELECT 1 FROM room_presence p WHERE p.room = pair.room AND p.user_id = pair.user_id
                                ORDER BY p.node_id FOR UPDATE) AS locked""",
        "chat_enter_many": f"""
            WITH room AS (
                SELECT pair.* FROM unnest(%(rooms)s, %(user_ids)s, %(usernames)s, %(announces)s)
                                   WITH ORDINALITY AS pair(room, user_id, username, announce, n)
                WHERE EXISTS (SELECT 1 FROM chat_members m WHERE m.room = pair.room AND m.user_id = pair.user_id)
            ), {_ENTER_PAIRS}
            SELECT n, first, version, {_NOTIFY_PAIR} FROM told ORDER BY n""",
        # chat_join for many (room, user) pairs (Joins): the rooms' facts read once each,
        # however many join them; a pair whose room is missing, or private and the user no
        # member, gets no row.
        "chat_join_many": f"""
            WITH asked AS (
                SELECT pair.* FROM unnest(%(rooms)s, %(user_ids)s, %(usernames)s, %(announces)s)
                                   WITH ORDINALITY AS pair(room, user_id, username, announce, n)
            ), rooms_asked AS MATERIALIZED (
                SELECT r.name, r.last_seq, r.is_private IS TRUE AS private,
                       {store.ROOM_LAST_ID.format("r.name")} AS last_id,
                       (SELECT count(*) FROM chat_members c WHERE c.room = r.name) AS members_before,
                       (SELECT c.user_id FROM chat_members c WHERE c.room = r.name AND c.role = 'owner'
                        ORDER BY c.user_id LIMIT 1) AS owner
                FROM rooms r WHERE r.name IN (SELECT room FROM asked)
            ), room AS MATERIALIZED (
                -- whether each is a member already: exact, the pair being locked
                SELECT a.*, q.last_seq, q.last_id, q.members_before, q.owner, m.was_member
                FROM asked a JOIN rooms_asked q ON q.name = a.room
                CROSS JOIN LATERAL (SELECT EXISTS (SELECT 1 FROM chat_members c
                                                   WHERE c.room = a.room AND c.user_id = a.user_id) AS was_member) m
                WHERE m.was_member OR NOT q.private
            ), added AS (
                INSERT INTO chat_members (room, user_id, last_read_id)
                SELECT room, user_id, last_id FROM room WHERE NOT was_member ORDER BY room, user_id
                ON CONFLICT DO NOTHING
            ), {_ENTER_PAIRS}
            SELECT n, last_seq, last_id, first, version, NOT was_member AS member_changed,
                   members_before + count(*) FILTER (WHERE NOT was_member) OVER (PARTITION BY room) AS members,
                   owner,
                   {_NOTIFY_PAIR},
                   CASE WHEN NOT was_member AND %(channel)s IS NOT NULL THEN
                       pg_notify(%(channel)s, %(origin)s || '|' || json_build_object(
                           'k', 'member', 'room', room, 'userId', user_id, 'after', last_id)::text) END
            FROM told ORDER BY n""",
        # The online lists of rooms read at once (OnlineListReads): who has a row on a live node.
        "chat_online_users": f"""
            SELECT DISTINCT ON (p.room, p.user_id) p.room, p.user_id,
                   COALESCE(p.username, u.username, 'user' || p.user_id)
            FROM room_presence p LEFT JOIN users u ON u.id = p.user_id
            WHERE p.room = ANY(%(rooms)s) AND p.node_id IN ({ALIVE})
            ORDER BY p.room, p.user_id""",
    },
    types={
        "room": "text",
        "user_id": "bigint",
        "node_id": "text",
        "me": "text",
        "username": "text",
        "alive_seconds": "float8",
        "lock": "text",
        "channel": "text",
        "origin": "text",
        "event": "jsonb",
        "announce": "boolean",
        "only_if_dead": "boolean",
        "rooms_per_minute": "integer",
        "by": "bigint",
        "member_event": "jsonb",
        "rooms": "text[]",
        "user_ids": "bigint[]",
        "usernames": "text[]",
        "announces": "boolean[]",
    },
    # The statements of a batch (up to 1,000 pairs, or 500 rooms), where planning costs
    # little against running: planned with the arrays' lengths and the table as it is.
    # Generically, unnest of a parameter is guessed at 10 rows, so chat_enter_many's CTE
    # joins by (room, user) would be nested loops, quadratic in the batch; and a plan made
    # while room_presence was small (a worker's first statements after a restart, before
    # its crowd reconnects) walks the whole room_presence_node index, filtering each row
    # by room, for each pair, or for each online-list read.
    planned_each_time=frozenset({"chat_enter_many", "chat_join_many", "chat_presence_rows_many", "chat_online_users"}),
)
_EXECUTE = STATEMENTS.execute
_LOCKS = [_EXECUTE["chat_presence_lock"], _EXECUTE["chat_presence_rows"]]
_JOIN = "; ".join([*_LOCKS, _EXECUTE["chat_join"]])
_JOIN_CREATING = "; ".join([_EXECUTE["chat_lock_creator"], _EXECUTE["chat_create_room"], _JOIN])
_ENTER_MEMBER = "; ".join([*_LOCKS, _EXECUTE["chat_enter"]])
_LEAVE = "; ".join([*_LOCKS, _EXECUTE["chat_leave"]])
_END_MEMBERSHIP = "; ".join([*_LOCKS, _EXECUTE["chat_end_membership"]])
_INVITE = "; ".join([*_LOCKS, _EXECUTE["chat_invite"]])
_REMOVE = "; ".join([*_LOCKS, _EXECUTE["chat_remove"]])
_LOCKS_MANY = [_EXECUTE["chat_lock_many"], _EXECUTE["chat_presence_rows_many"]]
_ENTER_MANY = "; ".join([*_LOCKS_MANY, _EXECUTE["chat_enter_many"]])
_JOIN_MANY = "; ".join([*_LOCKS_MANY, _EXECUTE["chat_join_many"]])
# Pairs written by one chat_enter_many at most, and greenlets writing them at once: a
# crowd of connects becomes a few statements, each one round trip and one commit.
TEND_BATCH_MAX = 1000
TENDERS_MAX = 4
# How long a batch of presence rows waits at most for the event loop to have nothing else
# to run (Tends.before_batch): how much later than its welcome a user shows up (or leaves)
# in the lists of others while the worker is busy. A worker that is never idle still
# writes TENDERS_MAX batches of up to TEND_BATCH_MAX pairs each such wait.
TEND_YIELD_SECONDS = 0.5
# Then, while a crowd is connecting (connects wait for their welcome or their resume reads),
# the batch waits on, looking again every TEND_CROWD_POLL_SECONDS, for TEND_CROWD_WAIT_SECONDS
# at most: a crowd's presence shows at most that much later than without it. Its chats come
# back sooner (the rows and their fan-out are about a sixth of a storm's CPU), and its
# presence settles no later: the rows go in fewer, larger batches (bench/README.md, the storm).
TEND_CROWD_POLL_SECONDS = 0.1
TEND_CROWD_WAIT_SECONDS = 10.0
# Joins written by one chat_join_many at most, and greenlets writing them at once. The
# joiners of a batch resume together, each building a join_ack of up to 1,000 users
# before the event loop comes round: the batch bounds that pause. Two writers, so that
# while one batch waits for a lock (a pair another node is changing) the joins that come
# meanwhile are written by the other.
JOIN_BATCH_MAX = 64
JOINERS_MAX = 2
# Rooms whose online lists one statement reads at most, and greenlets reading at once.
ONLINE_READ_BATCH_MAX = 500
ONLINE_READERS_MAX = 2


class Entered(NamedTuple):
    """What a join's (or a member's entry's) statement found: see Presence.join."""

    state: RoomState
    announced: list[dict]
    online: RoomOnline
    members: int  # the room's member count, the user included
    new_member: bool  # the statement made the user a member
    owner: int | None = None  # the room's owner (chat_members.role), None for a room made by `join`


class OnlineListReads(Batched[str, dict[int, str]]):
    """The online lists of many rooms, read by one statement: a crowd reconnecting joins
    thousands of rooms, and the first join of each here reads its list (OnlineLists)."""

    def __init__(self, pool: Pool, node_timeout: float) -> None:
        super().__init__(ONLINE_READ_BATCH_MAX, ONLINE_READERS_MAX)
        self.pool = pool
        self.node_timeout = node_timeout

    def answer_batch(self, rooms: list[str]) -> list[dict[int, str]]:
        """Each room's users online (user id -> name), a list of its own for each asker."""
        by_room: dict[str, dict[int, str]] = {room: {} for room in rooms}
        with self.pool.autocommit() as cur:
            parameters = {"rooms": TextArray(sorted(by_room)), "alive_seconds": self.node_timeout}
            cur.execute(_EXECUTE["chat_online_users"], parameters)
            rows = cur.fetchall()
        for room, user_id, username in rows:
            by_room[room][user_id] = username
        return [dict(by_room[room]) for room in rooms]


class Tends(Batched[tuple[str, int, str], None]):
    """(room, user id, name) pairs tended many a statement (Presence.tend_many), nobody
    waiting: what fails is the heartbeat's to repair."""

    def __init__(
        self,
        tend_many: Callable[[list[tuple[str, int, str]]], None],
        crowd_connecting: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__(TEND_BATCH_MAX, TENDERS_MAX)
        self.tend_many = tend_many
        # whether connects are waiting for their welcome or resume reads now
        self.crowd_connecting = crowd_connecting
        # (room, user id) -> how many of its tends are queued or being written: the
        # heartbeat's reconcile leaves those to us (behind a crowd connecting, it would
        # otherwise find them all missing and write them a second time)
        self.pending: Counter[tuple[str, int]] = Counter()
        # the pending (room, user id) whose leave was heard meanwhile (Presence.hear): their
        # join is announced when their row is written, even in a room too crowded for
        # presence; forgotten with the pair once no tend of it is pending
        self.told_gone: set[tuple[str, int]] = set()

    def ask_later(self, requests: list[tuple[str, int, str]]) -> None:
        self.pending.update((room, user_id) for room, user_id, _ in requests)
        super().ask_later(requests)

    def before_batch(self) -> None:
        """Let everything else the event loop has to run go first, for TEND_YIELD_SECONDS at
        most, then let a crowd connecting go first, for TEND_CROWD_WAIT_SECONDS at most.

        Nobody waits for these rows: they put a user in the lists of the others. A crowd
        reconnecting needs its welcomes and resumes first, and the pairs queued meanwhile
        join the batch, one statement and one commit for more of them (the storm's figures
        are in bench/README.md). The event loop goes idle now and then even in a crowd (it
        waits for the database): the idle wait alone does not keep the rows behind it.
        """
        with gevent.Timeout(TEND_YIELD_SECONDS, False):
            gevent.idle()
        deadline = time.monotonic() + TEND_CROWD_WAIT_SECONDS  # wall time: a busy loop sleeps long
        while self.crowd_connecting() and time.monotonic() < deadline:
            gevent.sleep(TEND_CROWD_POLL_SECONDS)

    def answer_batch(self, pairs: list[tuple[str, int, str]]) -> list[None]:
        try:
            self.tend_many(pairs)
        except ChatError:
            pass  # the next heartbeat's reconcile finds what is left
        except Exception:
            log.exception("writing presence failed")
        finally:
            keys = [(room, user_id) for room, user_id, _ in pairs]
            self.pending.subtract(keys)
            for key in set(keys):
                if self.pending[key] <= 0:
                    del self.pending[key]
                    self.told_gone.discard(key)
        return [None] * len(pairs)


class JoinRequest(NamedTuple):
    """A (room, user) pair to join or enter, and whether its first presence is announced."""

    room: str
    user_id: int
    username: str
    announce: bool  # the room is small enough for presence events


class JoinOutcome(NamedTuple):
    """What a join's statement found (see Presence.join).

    The statements (chat_join, chat_enter, chat_join_many after its pair's number) return
    these columns in this order, then the void columns of their NOTIFYs: `from_row`.
    """

    last_seq: int
    last_id: int
    first: bool  # the user's first presence in the room anywhere
    version: int | None  # the announced join's number, None when not announced
    new_member: bool  # the statement made the user a member
    members: int  # the room's member count, the user included
    owner: int | None

    @classmethod
    def from_row(cls, row: tuple) -> JoinOutcome:
        return cls._make(row[: len(cls._fields)])


class Joins(Batched[JoinRequest, "JoinOutcome | None"]):
    """Joins that may make memberships, many a statement: the answer of each is what
    chat_join tells, None when the room is missing (or private, the user no member).

    A join updates its room's count of users online (room_online) and NOTIFYs, and
    PostgreSQL holds both the row's lock and the lock of its notification queue (one for
    the whole database) until the commit is flushed: one transaction per join lets a crowd
    into a room one flush at a time. In a batch, the joins queued while the previous one
    ran share one transaction and one flush. A lone join keeps its statement (chat_join),
    planned once per connection.

    A pair is never twice in a batch: Memberships.join holds Presence.changing for it
    while it waits.
    """

    def __init__(self, presence: Presence) -> None:
        super().__init__(JOIN_BATCH_MAX, JOINERS_MAX)
        self.presence = presence

    def answer_batch(self, requests: list[JoinRequest]) -> list[JoinOutcome | None | Exception]:
        if len(requests) == 1:
            return [self._one(requests[0])]
        try:
            return self._many(requests)
        except psycopg2.Error:
            # Not the database away (that is a ChatError, for everyone): something in one
            # request. Each alone, so that it sinks nobody else's join.
            log.exception("a batch of %d joins failed; writing them one by one", len(requests))
        answers: list[JoinOutcome | None | Exception] = []
        for request in requests:
            try:
                answers.append(self._one(request))
            except Exception as exc:
                answers.append(exc)
        return answers

    def _one(self, request: JoinRequest) -> JoinOutcome | None:
        return self.presence._run_join(_JOIN, *request)

    def _many(self, requests: list[JoinRequest]) -> list[JoinOutcome | None]:
        with self.presence.pool.autocommit() as cur:
            cur.execute(_JOIN_MANY, self.presence._pairs_parameters(requests))
            rows = {row[0]: JoinOutcome.from_row(row[1:]) for row in cur.fetchall()}
        return [rows.get(n) for n in range(1, len(requests) + 1)]


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
        members_here: Callable[[str], Iterable[Any]] = lambda room: (),
        crowd_connecting: Callable[[], bool] = lambda: False,
    ) -> None:
        self.pool = pool
        self.bus = bus
        self.node_id = node_id
        self.node_timeout = node_timeout_seconds
        self.deliver_event = deliver_event
        # (user id, room) -> whether a connection of the user here is in the room
        # (Hub.user_in_room): what this node's presence rows should say
        self.user_here = user_here
        # In rooms with more users online than this, joins and leaves are not announced:
        # 10,000 people joining one room would otherwise be 50 million presence frames.
        self.max_announced_room_size = max_announced_room_size
        # Rooms a user may create a minute (0: no limit), counted in the database.
        self.rooms_per_minute = rooms_per_minute
        self._online_reads = OnlineListReads(pool, node_timeout_seconds)
        # who is online in each room, as this process has told its members
        self.online = OnlineLists(
            self._read_online_users,
            deliver_event,
            max_announced_room_size,
            online_cache_seconds,
            user_here,
            members_here,
        )
        # (room, user_id) -> held while this process changes that user's membership or
        # presence there (see `changing`)
        self._changing = KeyedLocks()
        # (room, user id, name) queued by tend_soon: the connects of a crowd (every client
        # reconnecting after a restart) queue their rooms while a statement runs, and the
        # next takes them all at once
        self._tends = Tends(self.tend_many, crowd_connecting)
        # joins that may make memberships: a crowd joining a room writes them many at once
        self._joins = Joins(self)
        # (room, user_id) -> (number, time.monotonic()) of the newest presence event heard
        # here about that user in that room, the least recently heard first (see in_order)
        self._newest_events: OrderedDict[tuple[str, int], tuple[int, float]] = OrderedDict()
        # time.monotonic() of our node row's last refresh (see heartbeat), and how many
        # other nodes were alive then
        self._beaten_at = 0.0
        self.alive_others = 0
        # whether the heartbeat's reconcile of our rows is due (it reads them all)
        self.full_check = FullCheck(pool)

    def changing(self, room: str, user_id: int):
        """Hold while this process changes the user's membership or presence in the room.

        A join holds it from its statement until the hub lists the connections, a leave
        from its statement until the hub has dropped them, the reconcile from asking the
        hub until its statement is done: so this process's changes of one user and room
        happen one after the other, and a tab joining while another leaves is never
        announced gone. Across processes the advisory lock of the statements orders them.
        """
        return self._changing.hold((room, user_id))

    def join(self, room: str, user_id: int, username: str, create_room: bool) -> Entered | None:
        """Make the user a member of the room and record this node's connection there.

        One transaction, shared with the joins of others queued meanwhile (Joins); a room
        that does not exist is created if `create_room`, in a transaction of its own.

        Returns the room's stream position, the announcements to pass to `after_commit`,
        who was online (read before, so that answering the join needs no more I/O) and
        the member count; None when the room does not exist. A join is announced only
        when this process had no row for the user yet and no other process has one; the
        statement runs under the (room, user) advisory lock, so two tabs joining at once
        on two processes take turns and the second finds the first one's row.
        """

        def write(announce: bool) -> JoinOutcome | None:
            joined = self._joins.ask(JoinRequest(room, user_id, username, announce))
            if joined is None and create_room:
                # Missing (or private, the user no member: then this finds that again):
                # the statement that creates a room, rarely needed, runs alone.
                joined = self._run_join(_JOIN_CREATING, room, user_id, username, announce)
            return joined

        return self._enter(room, user_id, username, write)

    def enter(self, room: str, user_id: int, username: str) -> Entered | None:
        """Record this node's connection of a member in the room, as `join` without making anyone a member.

        None when the user is not a member (any more).
        """
        return self._enter(
            room, user_id, username, lambda announce: self._run_join(_ENTER_MEMBER, room, user_id, username, announce)
        )

    def _enter(
        self, room: str, user_id: int, username: str, write: Callable[[bool], JoinOutcome | None]
    ) -> Entered | None:
        """Read who is online, `write(announce)` the join or entry, and make ready what it found."""
        online = self.online.get(room)
        try:
            joined = write(self._join_announced(online, room, user_id))
        except ChatError:
            # Committed or not, the heartbeat's reconcile makes the row what the hub says;
            # the members here learn what happened when the list is read again.
            self.online.mark_unheard([room])
            raise
        if joined is None:
            return None
        return self._entered(room, user_id, username, online, joined)

    def _run_join(self, statement: str, room: str, user_id: int, username: str, announce: bool) -> JoinOutcome | None:
        """Run one join's (or entry's) statement: what it found, None when it found no room for the user."""
        event = presence_event(room, "join", user_id, username)
        with self.pool.autocommit() as cur:
            cur.execute(statement, self._parameters(room, user_id, username, event, self.node_id, announce))
            row = cur.fetchone()
        return None if row is None else JoinOutcome.from_row(row)

    def _entered(self, room: str, user_id: int, username: str, online: RoomOnline, joined: JoinOutcome) -> Entered:
        """What a committed join or entry found, its membership told and its announcements made ready."""
        if joined.new_member:
            began = {"k": "member", "room": room, "userId": user_id, "after": joined.last_id}
            self._publish_member(room, user_id, began)
        announced = self._after_statement(joined.first, joined.version, presence_event(room, "join", user_id, username))
        state = RoomState(joined.last_seq, joined.last_id)
        return Entered(state, announced, online, joined.members, joined.new_member, joined.owner)

    def leave(self, room: str, user_id: int, username: str) -> None:
        """Forget this node's connection of the user in the room.

        Announced if no connection of theirs remains anywhere: one round trip, under the
        (room, user) advisory lock. A failure is the heartbeat's to repair.
        """
        try:
            announced = self._leave(room, user_id, username, self.node_id)
        except ChatError:
            self.online.mark_unheard([room])
            raise
        self.after_commit(announced)

    def end_membership(self, room: str, user_id: int, username: str) -> bool:
        """End the user's membership of the room and their presence there on every node.

        The leave is announced if they were online; one round trip. Returns whether they
        were a member.
        """
        event = presence_event(room, "leave", user_id, username)
        announce = self._announced_in(self.online.get(room), user_id)
        try:
            with self.pool.autocommit() as cur:
                cur.execute(_END_MEMBERSHIP, self._parameters(room, user_id, username, event, self.node_id, announce))
                ended, was_here, version = cur.fetchone()[:3]
        except ChatError:
            self.online.mark_unheard([room])
            raise
        if ended:
            self._publish_member(room, user_id, {"k": "member", "room": room, "userId": user_id, "ended": True})
        self.after_commit(self._after_statement(was_here, version, event))
        return ended

    def invite(self, room: str, user_id: int, by: int, member_event: dict) -> int | None:
        """Make the user a member of the room if `by` is one; the room's last id when the
        membership began, None when it is not new.

        `member_event` is announced to the other nodes, with that id as `after`; one round trip.
        """
        parameters = self._parameters(room, user_id, "", {}, self.node_id, False)
        parameters.update(by=by, member_event=Json(member_event, dumps=_dumps_text))
        with self.pool.autocommit() as cur:
            cur.execute(_INVITE, parameters)
            added, after = cur.fetchone()[:2]
        if not added:
            return None
        self._publish_member(room, user_id, {**member_event, "after": after})
        return after

    def remove(self, room: str, user_id: int, username: str, by: int, member_event: dict) -> bool:
        """End the user's membership of the room if `by` owns it; return whether it ended.

        As `end_membership`, announcing `member_event` to the other nodes.
        """
        event = presence_event(room, "leave", user_id, username)
        announce = self._announced_in(self.online.get(room), user_id)
        parameters = self._parameters(room, user_id, username, event, self.node_id, announce)
        parameters.update(by=by, member_event=Json(member_event, dumps=_dumps_text))
        try:
            with self.pool.autocommit() as cur:
                cur.execute(_REMOVE, parameters)
                ended, was_here, version = cur.fetchone()[:3]
        except ChatError:
            self.online.mark_unheard([room])
            raise
        if ended:
            self._publish_member(room, user_id, member_event)
        self.after_commit(self._after_statement(was_here, version, event))
        return ended

    def _publish_member(self, room: str, user_id: int, event: dict | None = None) -> None:
        """Tell the other nodes that a membership began or ended.

        The PostgreSQL bus told it inside the transaction; other buses are told now.
        """
        if not self.bus.notify_channel:
            self.bus.publish_event(event or {"k": "member", "room": room, "userId": user_id})

    def publish_member(self, event: dict) -> None:
        """Tell the other nodes, on every bus, of a membership changed outside these statements.

        A room created with its owner, say.
        """
        self.bus.publish_event(event)

    def _leave(self, room: str, user_id: int, username: str, node_id: str) -> list[dict]:
        """Remove `node_id`'s row of the user in the room; return the announcements to make.

        The row is ours, or a dead node's while it stays dead.
        """
        event = presence_event(room, "leave", user_id, username)
        announce = self._announced_in(self.online.get(room), user_id)
        parameters = self._parameters(room, user_id, username, event, node_id, announce)
        with self.pool.autocommit() as cur:
            cur.execute(_LEAVE, parameters)
            last, version = cur.fetchone()[:2]
        return self._after_statement(last, version, event)

    def _parameters(self, room: str, user_id: int, username: str, event: dict, node_id: str, announce: bool) -> dict:
        parameters = statement_parameters(
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
        parameters["me"] = self.node_id
        return parameters

    def _after_statement(self, changed: bool, version: int | None, event: dict) -> list[dict]:
        """Return the announcements of a committed join or leave.

        `changed`: the user's first or last anywhere. When it is not announced (a crowded
        room), only the cached list changes.
        """
        if not changed:
            return []
        if version is not None:
            return [{**event, "v": version}]
        self.online.note(event["room"], event["event"], event["userId"], event["username"])
        return []

    def after_commit(self, announced: list[dict]) -> None:
        """Deliver the announcements of a committed transaction here (and publish them).

        Publishing waits for the bus, so the frames are coalesced (one write per client)
        only where nothing is published here: the PostgreSQL bus announced them already.
        """
        if self.bus.notify_channel:
            with coalesced():
                for payload in announced:
                    self.deliver_event(payload)
            return
        for payload in announced:
            self.bus.publish_event(payload)
            self.deliver_event(payload)

    def _join_announced(self, online: RoomOnline, room: str, user_id: int) -> bool:
        """Whether the user's join of the room is to be announced if it is their first
        anywhere: in a room small enough, or after others were told they left (`hear`)."""
        return self._announced_in(online, user_id) or (room, user_id) in self._tends.told_gone

    def _announced_in(self, online: RoomOnline, user_id: int) -> bool:
        """Whether the room, counting this user, is small enough for presence events."""
        return len(online.users) + (user_id not in online.users) <= self.max_announced_room_size

    def _read_online_users(self, room: str) -> dict[int, str]:
        return self._online_reads.ask(room)

    def repair_unheard(self) -> None:
        """Tell the members here the joins and leaves the bus lost (OnlineLists.repair_unheard).

        A step of the heartbeat, after the reconcile that writes our users again if the
        others buried us meanwhile: read before that, the lists would tell our own
        clients that our users left, then that they came back (OnlineLists asks the hub).
        """
        self.online.repair_unheard()

    def hear(self, payload: dict) -> News:
        """Apply a presence event (announced here or heard from the bus) to this node's
        lists; whom among the room's members here it is news to.

        A leave of a user who is here, their row still waiting to be written (Tends), was
        announced as their last anywhere: a tab on another node closed before this row
        existed. Everyone was told they are gone, and in a room too crowded for presence
        their row, once written, would tell nobody otherwise: that join is announced.
        (A leave heard once the row's statement has begun is missed: a round trip's
        window, not the wait for a crowd.)
        """
        if not self.in_order(payload):
            return NOBODY
        room, user_id = payload["room"], payload["userId"]
        if payload["event"] == "leave" and (room, user_id) in self._tends.pending and self.user_here(user_id, room):
            self._tends.told_gone.add((room, user_id))
        return self.online.note(room, payload["event"], user_id, payload["username"])

    def in_order(self, payload: dict) -> bool:
        """Whether a presence event is newer than any other heard here about its user in its room.

        Such an event is to be applied, and is then remembered as the newest.

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

    # --- the reconcile, and the heartbeat --------------------------------------------------------

    def tend(self, room: str, user_id: int, username: str) -> None:
        """Make this node's row of the user in the room say what the hub says.

        The row is there while a connection of theirs here is in the room (and they are a
        member), else gone. Under the (room, user) lock, asking the hub then: joins and
        leaves go on meanwhile. Both statements change nothing when the row is as it should
        be already.
        """
        with self.changing(room, user_id):
            if self.user_here(user_id, room):
                entered = self.enter(room, user_id, username)
                if entered is not None:
                    self.after_commit(entered.announced)
            else:
                self.leave(room, user_id, username)

    def tend_soon(self, pairs: list[tuple[str, int, str]]) -> None:
        """Tend these (room, user id, name) soon, with the others queued meanwhile (Tends).

        Called at a connection's first or last here, for its rooms' rows; what fails is the
        heartbeat's.
        """
        self._tends.ask_later(pairs)

    def tend_many(self, pairs: list[tuple[str, int, str]]) -> None:
        """`tend` for many (room, user id, name) at once.

        The rows to add are written by one statement: one round trip and one commit (one
        WAL flush) for all of them. Rows to remove, rarer on a connect, are removed one by
        one. The (room, user) locks are taken in one order, here and in the statement, so
        that two batches never wait for each other in a circle.
        """
        pairs = sorted({(room, user_id): username for room, user_id, username in pairs}.items())
        with self._changing.hold_all([key for key, _ in pairs]):
            entering = [(room, user_id, name) for (room, user_id), name in pairs if self.user_here(user_id, room)]
            if entering:
                self._enter_many(entering)
            for (room, user_id), username in pairs:
                if not self.user_here(user_id, room):
                    self.leave(room, user_id, username)

    def _enter_many(self, entering: list[tuple[str, int, str]]) -> None:
        """chat_enter for every (room, user id, name), in one statement; then their announcements."""
        rooms = sorted({room for room, _, _ in entering})
        onlines = {room: self.online.get(room) for room in rooms}
        events = [presence_event(room, "join", user_id, username) for room, user_id, username in entering]
        pairs = [
            JoinRequest(room, user_id, username, self._join_announced(onlines[room], room, user_id))
            for room, user_id, username in entering
        ]
        try:
            with self.pool.autocommit() as cur:
                cur.execute(_ENTER_MANY, self._pairs_parameters(pairs))
                rows = cur.fetchall()
        except ChatError:
            self.online.mark_unheard(rooms)
            raise
        announced = []
        for n, first, version, _ in rows:
            announced += self._after_statement(first, version, events[n - 1])
        self.after_commit(announced)

    def _pairs_parameters(self, pairs: list[JoinRequest]) -> dict:
        """The parameters of the statements of many (room, user) pairs (_ENTER_MANY, _JOIN_MANY)."""
        return {
            "rooms": TextArray(pair.room for pair in pairs),
            "user_ids": BigintArray(pair.user_id for pair in pairs),
            "usernames": TextArray(pair.username for pair in pairs),
            "announces": BoolArray(pair.announce for pair in pairs),
            "node_id": self.node_id,
            "alive_seconds": self.node_timeout,
            "channel": self.bus.notify_channel,
            "origin": self.bus.origin,
        }

    def heartbeat(self, local_presence: Callable[[], dict[tuple[str, int], str]]) -> int:
        """Refresh our node, reconcile its rows with its connections, bury nodes that stopped beating.

        Returns how many other nodes are alive.

        `local_presence()` maps (room, user id) to the name, for every connection here in
        a room. The reconcile compares it with our rows and tends each difference (see
        `tend`): a leave or join that could not be written, one committed though its
        answer was lost, our rows removed by the others while we could not beat: one step
        repairs them all, since the database and the hub say what is true. It runs when
        one of those may have happened, or once a minute anyway (app/full_check.py).
        """
        alive_others = self._beat()
        self.full_check.run_if_due(lambda: self._reconcile(local_presence()))
        self._bury_dead_nodes()
        return alive_others

    def _reconcile(self, should: dict[tuple[str, int], str]) -> None:
        """Tend each (room, user) where our rows and the connections here (`should`) differ."""
        with self.pool.autocommit() as cur:
            cur.execute("SELECT room, user_id, username FROM room_presence WHERE node_id = %s", (self.node_id,))
            have = {(room, user_id): username for room, user_id, username in cur}
        pending = self._tends.pending.keys()  # written soon, or left to the next heartbeat if that fails
        missing = sorted(should.keys() - have.keys() - pending)
        for start in range(0, len(missing), TEND_BATCH_MAX):
            self._beat_if_due()
            self.tend_many(
                [(room, user_id, should[room, user_id]) for room, user_id in missing[start : start + TEND_BATCH_MAX]]
            )
        for key in sorted(have.keys() - should.keys() - pending):
            self._beat_if_due()
            self.tend(*key, have[key] or f"user{key[1]}")

    def _beat(self) -> int:
        """Refresh our node's row; return how many other nodes are alive.

        A row found missing (the others buried this node), or a beat later than half the
        node timeout (they may be burying it now), means our rows may be gone: the next
        reconcile compares them all (see full_check).
        """
        with self.pool.autocommit() as cur:
            cur.execute(
                f"""INSERT INTO chat_nodes (node_id) VALUES (%(node_id)s)
                    ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = now()
                    RETURNING xmax = 0, (SELECT count(*) FROM ({ALIVE}) AS alive WHERE node_id <> %(node_id)s)""",
                {"node_id": self.node_id, "alive_seconds": self.node_timeout},
            )
            (inserted, alive_others) = cur.fetchone()
        now = time.monotonic()
        if inserted or now - self._beaten_at >= self.node_timeout / 2:
            self.full_check.mark()
        self._beaten_at = now
        self.alive_others = alive_others
        return alive_others

    def _beat_if_due(self) -> None:
        """Refresh our node's row again during a long heartbeat.

        Writing thousands of users again (after a burial, say) takes a round trip or two
        each: longer than the node timeout, and the others would bury us again before we
        were done, and again after that.
        """
        if time.monotonic() - self._beaten_at >= self.node_timeout / 4:
            self._beat()

    def _bury_dead_nodes(self) -> None:
        """Remove the rows of nodes that stopped beating, then the nodes without rows.

        One row at a time, each under its (room, user) lock and announcing the user's leave
        if they are online nowhere else. What fails stays in the table for the next
        heartbeat (of any node): the rows are the list of what is left to do.
        """
        with self.pool.autocommit() as cur:
            cur.execute(
                """SELECT p.room, p.user_id, COALESCE(p.username, u.username, 'user' || p.user_id), p.node_id
                   FROM room_presence p LEFT JOIN users u ON u.id = p.user_id
                   WHERE p.node_id IN (SELECT node_id FROM chat_nodes
                                       WHERE heartbeat_at < now() - make_interval(secs => %s))
                   ORDER BY p.room, p.user_id""",
                (self.node_timeout,),
            )
            rows = cur.fetchall()
        for room, user_id, username, node_id in rows:
            self._beat_if_due()
            with self.changing(room, user_id):
                self.after_commit(self._leave(room, user_id, username, node_id))
        with self.pool.autocommit() as cur:
            cur.execute(
                """WITH dead AS (
                       DELETE FROM chat_nodes n WHERE heartbeat_at < now() - make_interval(secs => %s)
                         AND NOT EXISTS (SELECT 1 FROM room_presence p WHERE p.node_id = n.node_id)
                       RETURNING node_id
                   ), offline AS (DELETE FROM user_presence WHERE node_id IN (SELECT node_id FROM dead))
                   SELECT node_id FROM dead""",
                (self.node_timeout,),
            )
            dead = [row[0] for row in cur]
        if dead:
            log.info("buried %d dead node(s): %s", len(dead), ", ".join(dead))

    def forget_node(self) -> None:
        """On shutdown: remove our node and presence rows (the leaves were sent already)."""
        with self.pool.transaction() as cur:
            _remove_rows(cur, [self.node_id])
            cur.execute("DELETE FROM chat_nodes WHERE node_id = %s", (self.node_id,))


def _remove_rows(cur, nodes: list[str]) -> None:
    """Remove the presence rows of `nodes` and count again the users online in their rooms.

    Rooms and users, in the caller's transaction.

    Each room's count is locked (after its row is made sure of, so that no join inserts
    it after our snapshot) and taken again from the rows, each statement seeing what the
    previous one waited for.
    """
    cur.execute("DELETE FROM user_presence WHERE node_id = ANY(%s)", (nodes,))
    cur.execute("DELETE FROM room_presence WHERE node_id = ANY(%s) RETURNING room", (nodes,))
    rooms = sorted({room for (room,) in cur})
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
    """The parameters of the membership and presence statements.

    `announce`: the room is small enough for presence events; `channel`: where the
    statement NOTIFYs the event it announces (None: the caller publishes it);
    `rooms_per_minute`: how many rooms the user may create a minute (0: no limit).
    """
    return {
        "room": room,
        "user_id": user_id,
        "username": username,
        "node_id": node_id,
        "me": node_id,
        "alive_seconds": alive_seconds,
        "lock": f"presence:{room}:{user_id}",
        "announce": announce,
        "channel": channel,
        "origin": origin,
        "event": Json(event, dumps=_dumps_text),
        "only_if_dead": True,
        "rooms_per_minute": rooms_per_minute,
    }
