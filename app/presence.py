"""Who is online in which room, across every process and host, kept in PostgreSQL.

Each process (node) holds a row in chat_nodes refreshed by a heartbeat, and a row in
room_presence per (room, user) it has connections for. A user's presence event goes out
when their first connection anywhere joins a room and when their last one leaves; an
advisory lock per (room, user) makes "first" and "last" exact across nodes. A node whose
heartbeat is older than NODE_TIMEOUT_SECONDS is dead: the others remove its rows and send
the `leave` events, so a killed worker's users disappear within that bound.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import orjson

from .bus import Bus
from .db import Pool
from .errors import ChatError
from .protocol import listed_users

log = logging.getLogger(__name__)

ALIVE = "SELECT node_id FROM chat_nodes WHERE heartbeat_at > now() - make_interval(secs => %s)"


class RoomOnline:
    """Who is online in one room (user id -> name, in the order they came), as last read.

    Presence events keep it current in constant time, however large the crowd; the
    join_ack list of its first users is encoded once and kept until one of them changes,
    so that a crowd joining a room is not listed and encoded once per join.
    """

    __slots__ = ("read_at", "users", "_listed", "_listed_ids")

    def __init__(self, read_at: float, users: dict[int, str]) -> None:
        self.read_at = read_at
        self.users = users
        self._listed: tuple[int, orjson.Fragment] | None = None  # (how many at most, the JSON)
        self._listed_ids: set[int] = set()

    def add(self, user_id: int, username: str) -> None:
        if self.users.get(user_id) == username:
            return
        if self._listed and (user_id in self._listed_ids or len(self.users) < self._listed[0]):
            self._listed = None  # a listed name changed, or the newcomer is listed too
        self.users[user_id] = username

    def remove(self, user_id: int) -> None:
        if self.users.pop(user_id, None) is not None and user_id in self._listed_ids:
            self._listed = None  # the next one moves up into the list

    def listed(self, max_users: int) -> orjson.Fragment:
        """The JSON array of the first `max_users` users as join_ack lists them."""
        if self._listed is None or self._listed[0] != max_users:
            entries = listed_users(self.users, max_users)
            self._listed_ids = {entry["userId"] for entry in entries}
            self._listed = (max_users, orjson.Fragment(orjson.dumps(entries)))
        return self._listed[1]


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
        # In rooms with more users online than this, joins and leaves are not announced:
        # 10,000 people joining one room would otherwise be 50 million presence frames.
        self.max_announced_room_size = max_announced_room_size
        # room -> who is online there: read at most this often per room, so that a crowd
        # joining does not read the crowd once per join.
        self.online_cache_seconds = online_cache_seconds
        self.online_by_room: dict[str, RoomOnline] = {}

    def _lock(self, cur, room: str, user_id: int) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"presence:{room}:{user_id}",))

    def _others_online(self, cur, room: str, user_id: int) -> bool:
        cur.execute(
            f"""SELECT EXISTS (SELECT 1 FROM room_presence WHERE room = %s AND user_id = %s
                              AND node_id <> %s AND node_id IN ({ALIVE}))""",
            (room, user_id, self.node_id, self.node_timeout),
        )
        return cur.fetchone()[0]

    def enter(self, cur, room: str, user_id: int, username: str) -> list[dict]:
        """Record the user here in the room, in the caller's transaction.

        Announces a join only when this node had no row for the user yet and no other
        node has one: two tabs joining at once on one node take the (room, user) lock in
        turn, and the second finds the first one's row. Returns the announcements to pass
        to `after_commit` once that transaction commits.
        """
        announced: list[dict] = []
        self._lock(cur, room, user_id)
        cur.execute(
            """INSERT INTO room_presence (room, user_id, node_id, username) VALUES (%s, %s, %s, %s)
               ON CONFLICT DO NOTHING""",
            (room, user_id, self.node_id, username),
        )
        first_here = cur.rowcount == 1
        if first_here and not self._others_online(cur, room, user_id):
            if self._announced_in(cur, room, user_id):
                self._announce(cur, announced, room, "join", user_id, username)
            else:
                self.note(room, "join", user_id, username)
        return announced

    def leave(self, room: str, user_id: int, username: str, still_here: Callable[[], bool] = lambda: False) -> None:
        """Forget the user here in the room; announce if no connection of theirs remains.

        `still_here` tells whether a connection of the user joined the room here
        meanwhile; it is asked under the (room, user) lock, which a join holds until it
        has committed, so a tab that joins while another leaves is never announced gone.
        """
        announced: list[dict] = []
        try:
            with self.pool.transaction() as cur:
                self._lock(cur, room, user_id)
                if still_here():
                    return
                cur.execute(
                    "DELETE FROM room_presence WHERE room = %s AND user_id = %s AND node_id = %s",
                    (room, user_id, self.node_id),
                )
                if not self._others_online(cur, room, user_id):
                    if self._announced_in(cur, room, user_id):
                        self._announce(cur, announced, room, "leave", user_id, username)
                    else:
                        self.note(room, "leave", user_id, username)
            self.unsaved_leaves.discard((room, user_id, username))
            self.after_commit(announced)
        except ChatError:
            self.unsaved_leaves.add((room, user_id, username))

    def _announce(self, cur, announced: list[dict], room: str, event: str, user_id: int, username: str) -> None:
        payload = {"k": "p", "room": room, "event": event, "userId": user_id, "username": username}
        if self.bus.notify_channel:
            self.bus.publish_event(payload, cur)  # heard when this transaction commits
        announced.append(payload)

    def after_commit(self, announced: list[dict]) -> None:
        """Deliver the announcements of a committed transaction here (and publish them)."""
        for payload in announced:
            if not self.bus.notify_channel:
                self.bus.publish_event(payload)
            self.deliver_event(payload)

    def _announced_in(self, cur, room: str, user_id: int) -> bool:
        """Whether the room, counting this user, is small enough for presence events."""
        users = self.online_users(cur, room).users
        return len(users) + (user_id not in users) <= self.max_announced_room_size

    def online_users(self, cur, room: str) -> RoomOnline:
        """Who is online in the room, cluster-wide (read at most once a second per room;
        presence events keep it current in between)."""
        now = time.monotonic()
        cached = self.online_by_room.get(room)
        if cached is not None and now - cached.read_at < self.online_cache_seconds:
            return cached
        if len(self.online_by_room) > 10_000:
            self.online_by_room.clear()
        online = RoomOnline(now, self._read_online_users(cur, room))
        self.online_by_room[room] = online
        return online

    def note(self, room: str, event: str, user_id: int, username: str) -> None:
        """Keep the cached list of a room current with a presence event heard or sent."""
        cached = self.online_by_room.get(room)
        if cached is None:
            return
        if event == "join":
            cached.add(user_id, username)
        else:
            cached.remove(user_id)

    def _read_online_users(self, cur, room: str) -> dict[int, str]:
        cur.execute(
            f"""SELECT DISTINCT ON (p.user_id) p.user_id, COALESCE(p.username, u.username, 'user' || p.user_id)
                FROM room_presence p LEFT JOIN users u ON u.id = p.user_id
                WHERE p.room = %s AND p.node_id IN ({ALIVE})
                ORDER BY p.user_id""",
            (room, self.node_timeout),
        )
        return dict(cur.fetchall())

    # --- the heartbeat ---------------------------------------------------------------------------

    def heartbeat(self, local_presence: Callable[[], set[tuple[str, int, str]]]) -> int:
        """Refresh our node, retry unsaved leaves, and bury nodes that stopped beating.

        Returns how many other nodes are alive.
        """
        with self.pool.transaction() as cur:
            cur.execute(
                f"""INSERT INTO chat_nodes (node_id) VALUES (%s)
                    ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = now()
                    RETURNING (xmax = 0), (SELECT count(*) FROM ({ALIVE}) AS alive WHERE node_id <> %s)""",
                (self.node_id, self.node_timeout, self.node_id),
            )
            was_missing, alive_others = cur.fetchone()
        if was_missing:
            # New, or buried by the others while we could not beat: say again who is here.
            for room, user_id, username in local_presence():
                with self.pool.transaction() as cur:
                    announced = self.enter(cur, room, user_id, username)
                self.after_commit(announced)
        for room, user_id, username in list(self.unsaved_leaves):
            if (room, user_id, username) not in local_presence():
                self.leave(room, user_id, username)
            else:
                self.unsaved_leaves.discard((room, user_id, username))
        self._bury_dead_nodes()
        return alive_others

    def _bury_dead_nodes(self) -> None:
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
                """DELETE FROM room_presence p WHERE node_id = ANY(%s)
                   RETURNING p.room, p.user_id,
                             COALESCE(p.username, (SELECT username FROM users u WHERE u.id = p.user_id))""",
                (dead,),
            )
            gone = sorted({(room, user_id, username or f"user{user_id}") for room, user_id, username in cur})
        log.info("buried %d dead node(s): %s", len(dead), ", ".join(dead))
        for room, user_id, username in gone:
            announced: list[dict] = []
            with self.pool.transaction() as cur:
                self._lock(cur, room, user_id)
                cur.execute(
                    f"""SELECT EXISTS (SELECT 1 FROM room_presence WHERE room = %s AND user_id = %s
                                      AND node_id IN ({ALIVE}))""",
                    (room, user_id, self.node_timeout),
                )
                if not cur.fetchone()[0]:
                    self._announce(cur, announced, room, "leave", user_id, username)
            self.after_commit(announced)

    def forget_node(self) -> None:
        """On shutdown: remove our node and presence rows (the leaves were sent already)."""
        with self.pool.transaction() as cur:
            cur.execute("DELETE FROM room_presence WHERE node_id = %s", (self.node_id,))
            cur.execute("DELETE FROM chat_nodes WHERE node_id = %s", (self.node_id,))
