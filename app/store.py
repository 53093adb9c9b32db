"""The SQL of the chat: users, rooms, history, and the group-commit insert of messages.

Every function takes a cursor inside a transaction the caller owns; all SQL is
parameterised. Timestamps are formatted by PostgreSQL in the wire format (the session
time zone is UTC, so legacy `timestamp without time zone` columns read the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .messages import StoredMessage, message_data
from .tokens import Identity

WIRE_TIMESTAMP = """to_char(m.timestamp, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
USERNAME = "COALESCE(u.username, 'user' || m.from_user)"
MESSAGE_COLUMNS = f"m.id, m.seq, m.from_user, {USERNAME}, m.content, {WIRE_TIMESTAMP}, m.room, m.to_user, m.client_id"


def row_to_message(row: tuple) -> StoredMessage:
    id, seq, from_user, username, content, timestamp, room, to_user, client_id = row
    data = message_data(id, from_user, username, content, timestamp, room, to_user, client_id)
    return StoredMessage(id=id, seq=seq or 0, data=data)


# --- users ---------------------------------------------------------------------------------


def ensure_user(cur, identity: Identity) -> str:
    """Create the user named by a valid token when it has no row; return its username."""
    cur.execute("SELECT username FROM users WHERE id = %s", (identity.user_id,))
    row = cur.fetchone()
    if row:
        return identity.username or row[0]
    wanted = identity.username or f"user{identity.user_id}"
    # The name may belong to someone else already: then keep the user id visible in it.
    for candidate in (wanted, f"{wanted}#{identity.user_id}"):
        cur.execute(
            """INSERT INTO users (id, username) VALUES (%s, %s)
               ON CONFLICT DO NOTHING RETURNING username""",
            (identity.user_id, candidate),
        )
        if cur.fetchone():
            return identity.username or candidate
    cur.execute("SELECT username FROM users WHERE id = %s", (identity.user_id,))
    row = cur.fetchone()
    return identity.username or (row[0] if row else wanted)


def user_exists(cur, user_id: int) -> bool:
    cur.execute("SELECT 1 FROM users WHERE id = %s", (user_id,))
    return cur.fetchone() is not None


# --- rooms ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoomState:
    """Where a room's stream stands: its last sequence number and the id of that message."""

    last_seq: int
    last_id: int


def open_room(cur, room: str, create: bool) -> RoomState | None:
    """The room's stream position, creating the room first if allowed; None if unknown."""
    if create:
        cur.execute("INSERT INTO rooms (name) VALUES (%s) ON CONFLICT DO NOTHING", (room,))
    # One statement, one snapshot: last_seq and the newest id agree.
    cur.execute(
        """SELECT r.last_seq,
                  COALESCE((SELECT id FROM messages WHERE room = r.name ORDER BY id DESC LIMIT 1), 0)
           FROM rooms r WHERE r.name = %s""",
        (room,),
    )
    row = cur.fetchone()
    return RoomState(row[0], row[1]) if row else None


def room_exists(cur, room: str) -> bool:
    cur.execute("SELECT 1 FROM rooms WHERE name = %s", (room,))
    return cur.fetchone() is not None


def list_rooms(cur, alive_seconds: float) -> list[dict[str, Any]]:
    cur.execute(
        """SELECT r.name, r.description, COUNT(DISTINCT p.user_id)
           FROM rooms r
           LEFT JOIN room_presence p ON p.room = r.name
                AND p.node_id IN (SELECT node_id FROM chat_nodes
                                  WHERE heartbeat_at > now() - make_interval(secs => %s))
           GROUP BY r.name, r.description ORDER BY r.name""",
        (alive_seconds,),
    )
    return [{"name": name, "description": description, "online": online} for name, description, online in cur]


# --- history ---------------------------------------------------------------------------------


def _page(where: str, params: list, limit: int, before: int | None, after: int | None) -> tuple[str, list]:
    """Order and bounds of one history page; rows come back oldest first."""
    if before is not None:
        where += " AND m.id < %s"
        params.append(before)
    if after is not None:
        where += " AND m.id > %s"
        params.append(after)
        order = "ASC"  # the first ones after `after`
    else:
        order = "DESC"  # the latest ones (before `before`)
    sql = f"""SELECT {MESSAGE_COLUMNS} FROM messages m LEFT JOIN users u ON u.id = m.from_user
              WHERE {where} ORDER BY m.id {order} LIMIT %s"""
    params.append(limit)
    return sql, params


def room_history(
    cur, room: str, limit: int, before: int | None = None, after: int | None = None
) -> list[StoredMessage]:
    sql, params = _page("m.room = %s", [room], limit, before, after)
    cur.execute(sql, params)
    rows = [row_to_message(row) for row in cur]
    return rows if after is not None else rows[::-1]


def dm_history(
    cur, me: int, other: int, limit: int, before: int | None = None, after: int | None = None
) -> list[StoredMessage]:
    where = "m.to_user IS NOT NULL AND LEAST(m.from_user, m.to_user) = %s AND GREATEST(m.from_user, m.to_user) = %s"
    sql, params = _page(where, [min(me, other), max(me, other)], limit, before, after)
    cur.execute(sql, params)
    rows = [row_to_message(row) for row in cur]
    return rows if after is not None else rows[::-1]


def channel_after(cur, channel: tuple, after_id: int, below_seq: int | None, limit: int) -> list[StoredMessage]:
    """Messages of a room or conversation with id > after_id (and seq < below_seq), in id order."""
    if channel[0] == "r":
        where, params = "m.room = %s", [channel[1]]
    else:
        where = "m.to_user IS NOT NULL AND LEAST(m.from_user, m.to_user) = %s AND GREATEST(m.from_user, m.to_user) = %s"
        params = [channel[1], channel[2]]
    where += " AND m.id > %s"
    params.append(after_id)
    if below_seq is not None:
        where += " AND m.seq < %s"
        params.append(below_seq)
    cur.execute(
        f"""SELECT {MESSAGE_COLUMNS} FROM messages m LEFT JOIN users u ON u.id = m.from_user
            WHERE {where} ORDER BY m.id LIMIT %s""",
        params + [limit],
    )
    return [row_to_message(row) for row in cur]


def messages_by_id(cur, ids: list[int]) -> list[StoredMessage]:
    cur.execute(
        f"""SELECT {MESSAGE_COLUMNS} FROM messages m LEFT JOIN users u ON u.id = m.from_user
            WHERE m.id = ANY(%s) ORDER BY m.id""",
        (ids,),
    )
    return [row_to_message(row) for row in cur]


def dm_threads_of(cur, user_id: int) -> list[tuple[tuple, int, int]]:
    """Every conversation of a user with its stream position: (channel, last_seq, last_id)."""
    cur.execute(
        """SELECT t.user_low, t.user_high, t.last_seq,
                  COALESCE((SELECT id FROM messages m
                            WHERE m.to_user IS NOT NULL
                              AND LEAST(m.from_user, m.to_user) = t.user_low
                              AND GREATEST(m.from_user, m.to_user) = t.user_high
                            ORDER BY id DESC LIMIT 1), 0)
           FROM dm_threads t WHERE t.user_low = %s OR t.user_high = %s""",
        (user_id, user_id),
    )
    return [(("d", low, high), last_seq, last_id) for low, high, last_seq, last_id in cur]


def channel_heads(cur, rooms: list[str], pairs: list[tuple[int, int]]) -> dict[tuple, int]:
    """The last_seq of each room and conversation named (for the periodic gap check)."""
    heads: dict[tuple, int] = {}
    if rooms:
        cur.execute("SELECT name, last_seq FROM rooms WHERE name = ANY(%s)", (rooms,))
        heads.update({("r", name): seq for name, seq in cur})
    if pairs:
        cur.execute(
            """SELECT t.user_low, t.user_high, t.last_seq FROM dm_threads t
               JOIN unnest(%s::bigint[], %s::bigint[]) AS w(low, high)
                 ON t.user_low = w.low AND t.user_high = w.high""",
            ([p[0] for p in pairs], [p[1] for p in pairs]),
        )
        heads.update({("d", low, high): seq for low, high, seq in cur})
    return heads


# --- storing ---------------------------------------------------------------------------------


@dataclass
class Draft:
    """A message to store: a room message (room) or a DM (to_user)."""

    from_user: int
    username: str
    content: str
    room: str | None = None
    to_user: int | None = None
    client_id: str | None = None
    seq: int = 0

    @property
    def channel(self) -> tuple:
        if self.to_user is not None:
            return ("d", min(self.from_user, self.to_user), max(self.from_user, self.to_user))
        return ("r", self.room)


def find_by_client_ids(cur, keys: list[tuple[int, str]]) -> dict[tuple[int, str], StoredMessage]:
    """Messages already stored under (sender, clientId): a resend gets them back."""
    if not keys:
        return {}
    cur.execute(
        f"""SELECT {MESSAGE_COLUMNS} FROM messages m LEFT JOIN users u ON u.id = m.from_user
            JOIN unnest(%s::bigint[], %s::text[]) AS k(from_user, client_id)
              ON m.from_user = k.from_user AND m.client_id = k.client_id
            WHERE m.client_id IS NOT NULL""",
        ([k[0] for k in keys], [k[1] for k in keys]),
    )
    found = [row_to_message(row) for row in cur]
    return {(m.data["fromUser"], m.data["clientId"]): m for m in found}


def allocate_seqs(cur, drafts: list[Draft]) -> None:
    """Number the drafts within their rooms and conversations, under those rows' locks.

    The row lock is held until commit, so within one room (or conversation) commits happen
    in seq order, and seq order is id order. Rows are locked in sorted order so that two
    batches never wait for each other crosswise.
    """
    counts: dict[tuple, int] = {}
    for draft in drafts:
        counts[draft.channel] = counts.get(draft.channel, 0) + 1
    rooms = sorted(key[1] for key in counts if key[0] == "r")
    pairs = sorted(key[1:] for key in counts if key[0] == "d")
    heads: dict[tuple, int] = {}
    if rooms:
        cur.execute(
            """SELECT name FROM rooms WHERE name = ANY(%(rooms)s) ORDER BY name FOR UPDATE;
               UPDATE rooms r SET last_seq = r.last_seq + c.n
               FROM unnest(%(rooms)s::text[], %(counts)s::bigint[]) AS c(name, n)
               WHERE r.name = c.name RETURNING r.name, r.last_seq""",
            {"rooms": rooms, "counts": [counts[("r", name)] for name in rooms]},
        )
        heads.update({("r", name): last for name, last in cur})
    if pairs:
        cur.execute(
            """INSERT INTO dm_threads AS t (user_low, user_high, last_seq)
               SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) ORDER BY 1, 2
               ON CONFLICT (user_low, user_high) DO UPDATE SET last_seq = t.last_seq + EXCLUDED.last_seq
               RETURNING user_low, user_high, last_seq""",
            ([p[0] for p in pairs], [p[1] for p in pairs], [counts[("d", *p)] for p in pairs]),
        )
        heads.update({("d", low, high): last for low, high, last in cur})
    # Hand out the numbers that end at each head, in the drafts' order.
    next_seq = {key: heads[key] - counts[key] + 1 for key in counts if key in heads}
    for draft in drafts:
        draft.seq = next_seq[draft.channel]
        next_seq[draft.channel] += 1


_INSERT_MESSAGES = """
WITH drafts AS (
    SELECT * FROM unnest(%(from_user)s::bigint[], %(to_user)s::bigint[], %(room)s::text[],
                         %(content)s::text[], %(client_id)s::text[], %(seq)s::bigint[],
                         %(username)s::text[])
        AS d(from_user, to_user, room, content, client_id, seq, username)
), inserted AS (
    INSERT INTO messages (from_user, to_user, room, content, timestamp, client_id, seq)
    SELECT from_user, to_user, room, content, now(), client_id, seq FROM drafts
    ON CONFLICT (from_user, client_id) WHERE client_id IS NOT NULL DO NOTHING
    RETURNING id, seq, from_user, to_user, room, content, timestamp, client_id
), wire AS (
    SELECT m.id, m.seq, m.from_user, m.to_user, m.room, m.content, m.client_id, d.username,
           to_char(m.timestamp, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS ts
    FROM inserted m JOIN drafts d ON d.from_user = m.from_user AND d.seq = m.seq
         AND d.room IS NOT DISTINCT FROM m.room AND d.to_user IS NOT DISTINCT FROM m.to_user
)
"""

INSERT_MESSAGES = _INSERT_MESSAGES + "SELECT id, seq, from_user, to_user, room, ts, client_id FROM wire ORDER BY id"

# Announce each message inside its own transaction, so that it is heard exactly when it is
# committed, in commit order. A payload over PostgreSQL's 8000-byte limit carries only the
# id; listeners fetch the rest. Payloads are "<origin>|<json>" so a process can skip its
# own announcements without parsing them.
INSERT_AND_NOTIFY_MESSAGES = (
    _INSERT_MESSAGES
    + """
SELECT id, seq, from_user, to_user, room, ts, client_id,
       pg_notify(%(channel)s, CASE WHEN octet_length(body) <= 7900 THEN body
                                   ELSE %(origin)s || '|' || json_build_object('k', 'ref', 'id', id)::text END)
FROM (SELECT wire.*, %(origin)s || '|' || json_build_object(
          'k', 'm', 's', seq, 'd', json_strip_nulls(json_build_object(
              'id', id, 'fromUser', from_user, 'username', username, 'to', to_user,
              'content', content, 'timestamp', ts, 'room', room, 'clientId', client_id)))::text AS body
      FROM wire) AS announced
ORDER BY id
"""
)


def insert_messages(cur, drafts: list[Draft], notify_channel: str | None, origin: str) -> dict[tuple, StoredMessage]:
    """Insert numbered drafts in one statement; return what was stored by (channel, seq).

    A draft whose (sender, clientId) another process stored meanwhile is skipped by the
    unique index and missing from the result; its seq stays a hole that receivers skip.
    """
    params = {
        "from_user": [d.from_user for d in drafts],
        "to_user": [d.to_user for d in drafts],
        "room": [d.room for d in drafts],
        "content": [d.content for d in drafts],
        "client_id": [d.client_id for d in drafts],
        "seq": [d.seq for d in drafts],
        "username": [d.username for d in drafts],
        "channel": notify_channel,
        "origin": origin,
    }
    cur.execute(INSERT_AND_NOTIFY_MESSAGES if notify_channel else INSERT_MESSAGES, params)
    drafts_by_key = {(d.channel, d.seq): d for d in drafts}
    stored: dict[tuple, StoredMessage] = {}
    for id, seq, from_user, to_user, room, ts, client_id, *_ in cur.fetchall():
        key = (("d", min(from_user, to_user), max(from_user, to_user)) if to_user is not None else ("r", room), seq)
        draft = drafts_by_key[key]
        data = message_data(id, from_user, draft.username, draft.content, ts, room, to_user, client_id)
        stored[key] = StoredMessage(id=id, seq=seq, data=data)
    return stored
