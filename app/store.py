"""The SQL of the chat: users, rooms, history, and the group-commit insert of messages.

Every function takes a cursor inside a transaction the caller owns; all SQL is
parameterised. Timestamps are formatted by PostgreSQL in the wire format (the session
time zone is UTC, so legacy `timestamp without time zone` columns read the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from .messages import StoredMessage, message_data
from .prepared import PreparedStatements, plan_as_prepared
from .tokens import Identity

# A timestamp column in the wire format (PROTOCOL.md: RFC 3339, UTC, microseconds).
WIRE_TIMESTAMP = """to_char({}, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
USERNAME = "COALESCE(m.from_username, u.username, 'user' || m.from_user)"
# Stored messages as row_to_message reads them; a query adds its WHERE and ORDER BY.
# Its columns show each message as it is now (edited, deleted, its reactions: app/events.py).
MESSAGE_COLUMNS = f"""m.id, m.seq, m.from_user, {USERNAME}, m.content, {WIRE_TIMESTAMP.format("m.timestamp")},
           m.room, m.to_user, m.client_id, {WIRE_TIMESTAMP.format("m.edited_at")}, m.deleted, m.reactions"""
SELECT_MESSAGES = f"""SELECT {MESSAGE_COLUMNS}
    FROM messages m LEFT JOIN users u ON u.id = m.from_user"""
# The messages of one conversation, by its (lower, higher) user ids: the expression of the
# messages_dm_pair_id index (schema.sql), so that the index serves it.
DM_PAIR = (
    "m.to_user IS NOT NULL AND LEAST(m.from_user, m.to_user) = {low} AND GREATEST(m.from_user, m.to_user) = {high}"
)


def row_to_message(row: tuple) -> StoredMessage:
    """A message from the MESSAGE_COLUMNS of a row."""
    id, seq, from_user, username, content, timestamp, room, to_user, client_id, edited_at, deleted, reactions = row
    data = message_data(
        id, from_user, username, content, timestamp, room, to_user, client_id, edited_at, deleted, reactions
    )
    return StoredMessage(id=id, seq=seq or 0, data=data)


# --- users ---------------------------------------------------------------------------------


def ensure_user(cur, identity: Identity) -> str:
    """Create the user named by a valid token when it has no row; return its username."""
    cur.execute("SELECT username FROM users WHERE id = %s", (identity.user_id,))
    row = cur.fetchone()
    if row:
        return identity.username or row[0]
    return create_user(cur, identity)


def create_user(cur, identity: Identity) -> str:
    """Add the row of a user that has none (another session may add it meanwhile); return its username."""
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


# Public rooms, served to everyone; a private one (also the existing backend's) is served to
# its members only (PROTOCOL.md §8). (IS NOT TRUE: that backend's column may hold NULLs.)
PUBLIC = "is_private IS NOT TRUE"
# Whether the room `r` is served to user %(user_id)s: public, or private with them a member.
# Read in the statement that serves it, so a room turned private (by the existing backend,
# in SQL) is refused to non-members from its commit on.
VISIBLE = f"""(r.{PUBLIC} OR EXISTS (SELECT 1 FROM chat_members v
                                     WHERE v.room = r.name AND v.user_id = %(user_id)s))"""

# The id of room {0}'s newest entry, a message or an edit, delete or reaction (0: none):
# where a connection's stream of the room starts when nothing else here receives it, so an
# event after the newest message counts (app/events.py: a client's `since` may be an
# event's id, and a replay ends there). Two index probes.
ROOM_LAST_ID = """GREATEST(COALESCE((SELECT id FROM messages WHERE room = {0} ORDER BY id DESC LIMIT 1), 0),
                    COALESCE((SELECT id FROM message_events WHERE room = {0} ORDER BY id DESC LIMIT 1), 0))"""

# A membership `m` of room `r` as MemberRoom reads it.
MEMBER_ROOM_COLUMNS = f"""m.room, r.last_seq, {ROOM_LAST_ID.format("m.room")},
                   m.last_read_id, r.is_private IS TRUE, m.role IS NOT DISTINCT FROM 'owner'"""


class MemberRoom(NamedTuple):
    """A room the user is a member of, where its stream stands, and the user's read state.

    A named tuple, not a frozen dataclass, whose __init__ sets each field through
    object.__setattr__: a crowd reconnecting makes twenty of these a user.
    """

    room: str
    last_seq: int
    last_id: int
    last_read_id: int
    private: bool = False
    owner: bool = False  # the user owns the room (chat_members.role)


@dataclass(frozen=True)
class Session:
    """What a connecting user starts with (app/welcome_reads.py reads it).

    Their name, their conversations (channel, last_seq) as the hub tracks them, and the
    rooms they are a member of. Of a conversation only what dm_threads holds: the id of its
    last message (a lookup in `messages` per conversation, costly for a user with many
    partners) is looked up by a gate that needs it (see channel_after).
    """

    username: str
    threads: list[tuple[tuple, int]]
    rooms: list[MemberRoom]


def members_of(cur, user_ids: list[int]) -> set[tuple[str, int]]:
    """(room, user) of every membership of these users."""
    cur.execute(
        """SELECT m.room, m.user_id FROM chat_members m JOIN rooms r ON r.name = m.room
            WHERE m.user_id = ANY(%s)""",
        (user_ids,),
    )
    return set(cur)


def removed_among(cur, pairs: list[tuple[str, int]]) -> set[tuple[str, int]]:
    """Those of these (room, user) whose membership's latest end was a removal (chat_removals)."""
    if not pairs:
        return set()
    cur.execute(
        """SELECT c.room, c.user_id FROM chat_removals c
            JOIN unnest(%s::text[], %s::bigint[]) AS pair(room, user_id) USING (room, user_id)""",
        ([room for room, _ in pairs], [user_id for _, user_id in pairs]),
    )
    return set(cur)


def deployment_id(cur) -> str:
    """The id of the deployment this database belongs to (schema.sql, chat_deployment)."""
    cur.execute("SELECT id FROM chat_deployment")
    return cur.fetchone()[0]


def user_exists(cur, user_id: int) -> bool:
    cur.execute("SELECT 1 FROM users WHERE id = %s", (user_id,))
    return cur.fetchone() is not None


# --- rooms ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoomState:
    """Where a room's stream stands: its last sequence number and the id of that message."""

    last_seq: int
    last_id: int


# Room creation is limited per user in the database, not per worker: a user's connections
# may be spread over every worker and host. A join that would create a room first takes an
# advisory lock of the user (held to the end of its transaction), so that the user's joins on every process
# count their recent rooms one after the other and the limit is exact.
LOCK_CREATOR = """SELECT pg_advisory_xact_lock(hashtextextended('rooms-by:' || %(user_id)s, 0))
    WHERE NOT EXISTS (SELECT 1 FROM rooms WHERE name = %(room)s)"""
# Creates a room unless it exists (without drawing an id from the sequence when it does:
# every join runs it), or unless its user created `rooms_per_minute` in the last minute
# (0: no limit).
CREATE_ROOM = """INSERT INTO rooms (name, created_by) SELECT %(room)s, %(user_id)s
    WHERE NOT EXISTS (SELECT 1 FROM rooms WHERE name = %(room)s)
      AND (%(rooms_per_minute)s = 0 OR (SELECT count(*) FROM rooms
                                      WHERE created_by = %(user_id)s AND created_at > now() - interval '1 minute')
                                     < %(rooms_per_minute)s)
    ON CONFLICT DO NOTHING"""
# A room's stream position in one snapshot: its last_seq and the id of that message, or of
# that edit, delete or reaction.
ROOM_STATE = f"""SELECT r.name, r.last_seq, {ROOM_LAST_ID.format("r.name")} AS last_id
    FROM rooms r WHERE r.name = %(room)s AND {VISIBLE}"""


def room_visible(cur, room: str, user_id: int) -> bool:
    """Whether the room exists for the user: public, or private with them a member."""
    cur.execute(f"SELECT 1 FROM rooms r WHERE r.name = %(room)s AND {VISIBLE}", {"room": room, "user_id": user_id})
    return cur.fetchone() is not None


@dataclass(frozen=True)
class RoomAccess:
    """A room as one user may see it, and their part in it (role None: not a member)."""

    private: bool
    description: str
    role: str | None


def room_access(cur, room: str, user_id: int) -> RoomAccess | None:
    """The room as the user sees it.

    None when it does not exist for them (unknown, or private and they are not a member:
    never told apart).
    """
    cur.execute(
        f"""SELECT r.is_private IS TRUE, r.description,
                   (SELECT role FROM chat_members m WHERE m.room = r.name AND m.user_id = %(user_id)s)
            FROM rooms r WHERE r.name = %(room)s AND {VISIBLE}""",
        {"room": room, "user_id": user_id},
    )
    row = cur.fetchone()
    return RoomAccess(*row) if row else None


def is_member(cur, room: str, user_id: int) -> bool:
    cur.execute("SELECT 1 FROM chat_members WHERE room = %s AND user_id = %s", (room, user_id))
    return cur.fetchone() is not None


def member_name(cur, room: str, user_id: int) -> str | None:
    """The name the user's presence in the room goes by, else their stored one.

    The presence's name is its token's, as its join was announced. None when there is no
    such user.
    """
    cur.execute(
        """SELECT COALESCE((SELECT p.username FROM room_presence p
                            WHERE p.room = %(room)s AND p.user_id = u.id AND p.username IS NOT NULL LIMIT 1),
                           u.username)
           FROM users u WHERE u.id = %(user_id)s""",
        {"room": room, "user_id": user_id},
    )
    row = cur.fetchone()
    return row[0] if row else None


# create_room: the room, with its creator as its owner and first member, unless the name is
# taken or the creator is over the creation limit (CREATE_ROOM's rule). Run after
# LOCK_CREATOR in the same transaction. Returns whether it was created, and whether the name
# was taken before (the statement's snapshot does not see its own insert).
CREATE_OWNED_ROOM = """
WITH created AS (
    INSERT INTO rooms (name, created_by, is_private, description)
    SELECT %(room)s, %(user_id)s, %(private)s, %(description)s
    WHERE NOT EXISTS (SELECT 1 FROM rooms WHERE name = %(room)s)
      AND (%(rooms_per_minute)s = 0 OR (SELECT count(*) FROM rooms
                                      WHERE created_by = %(user_id)s AND created_at > now() - interval '1 minute')
                                     < %(rooms_per_minute)s)
    ON CONFLICT DO NOTHING RETURNING name
), owner AS (
    INSERT INTO chat_members (room, user_id, role) SELECT name, %(user_id)s, 'owner' FROM created
)
SELECT EXISTS (SELECT 1 FROM created), EXISTS (SELECT 1 FROM rooms WHERE name = %(room)s)"""


def create_owned_room(
    cur, room: str, user_id: int, private: bool, description: str, rooms_per_minute: int
) -> tuple[bool, bool]:
    """Create a room owned by the user (see CREATE_OWNED_ROOM): (created, name taken)."""
    parameters = {
        "room": room,
        "user_id": user_id,
        "private": private,
        "description": description,
        "rooms_per_minute": rooms_per_minute,
    }
    cur.execute(LOCK_CREATOR, parameters)
    cur.execute(CREATE_OWNED_ROOM, parameters)
    return cur.fetchone()


def room_named(cur, room: str) -> bool:
    """Whether a room of that name exists, served here or not."""
    cur.execute("SELECT 1 FROM rooms WHERE name = %s", (room,))
    return cur.fetchone() is not None


# The `rooms` list: the `most` rooms with the most users online, then by name. The rooms
# with someone online are read from their maintained counts (room_online, kept by joins,
# leaves and burials: app/presence.py) in the order of its index, the rest of the list,
# rooms with nobody online, from the first names of the rooms' name index: a few thousand
# index entries, however many rooms exist and users are online (counting room_presence, or
# grouping every room, grows with them). bench/rooms_list.py measures this one. In code
# point order, whatever the database's collation, as handle_rooms sorts the lists it merges.
LIST_ROOMS = f"""
WITH crowded AS (
    SELECT r.name, r.description, o.online::bigint AS online
    FROM room_online o JOIN rooms r ON r.name = o.room AND r.{PUBLIC}
    WHERE o.online > 0 ORDER BY o.online DESC, o.room LIMIT %(most)s
), quiet AS (
    SELECT r.name, r.description, 0::bigint AS online FROM rooms r
    WHERE r.{PUBLIC} AND NOT EXISTS (SELECT 1 FROM crowded c WHERE c.name = r.name)
    ORDER BY r.name LIMIT %(most)s
)
SELECT name, description, online, (SELECT count(*) FROM chat_members m WHERE m.room = listed.name), false FROM (
    SELECT * FROM crowded UNION ALL SELECT * FROM quiet ORDER BY online DESC, name LIMIT %(most)s
) listed ORDER BY name COLLATE "C"
"""


def privacy_changes(cur) -> int:
    """How many statements have set a room's privacy (schema.sql, chat_privacy_changes)."""
    cur.execute("SELECT changes FROM chat_privacy_changes")
    row = cur.fetchone()
    return row[0] if row is not None else 0


def list_rooms(cur, most: int) -> list[dict[str, Any]]:
    """The `most` public rooms with the most users online (then by name), in name order.

    With their member counts (a user's private rooms: `private_rooms_of`).
    """
    cur.execute(LIST_ROOMS, {"most": most})
    return _listed_rooms(cur)


def _listed_rooms(cur) -> list[dict[str, Any]]:
    """Rows of (name, description, online, members, private) as the `rooms` frame lists them."""
    return [
        {"name": name, "description": description, "online": online, "members": members, "private": private}
        for name, description, online, members, private in cur
    ]


# The rooms whose name holds %(query)s (lower case; names are ASCII), public or private
# with the user a member, the `most` with the most users online first: a scan of the room
# names, which a search by part of a name cannot avoid (rooms are few beside messages).
FIND_ROOMS = f"""
SELECT r.name, r.description, COALESCE(o.online, 0)::bigint AS online,
       (SELECT count(*) FROM chat_members c WHERE c.room = r.name), r.is_private IS TRUE
FROM rooms r LEFT JOIN room_online o ON o.room = r.name
WHERE strpos(lower(r.name), %(query)s) > 0
  AND (r.{PUBLIC} OR EXISTS (SELECT 1 FROM chat_members m WHERE m.room = r.name AND m.user_id = %(me)s))
ORDER BY online DESC, r.name LIMIT %(most)s"""


def find_rooms(cur, user_id: int, query: str, most: int) -> list[dict[str, Any]]:
    """The rooms the user may see whose name holds `query` (any case), as `list_rooms` lists
    them: the `most` with the most users online (then by name), in name order."""
    cur.execute(FIND_ROOMS, {"query": query.lower(), "me": user_id, "most": most})
    return sorted(_listed_rooms(cur), key=lambda room: room["name"])


def private_rooms_of(cur, user_id: int, rooms: list[str]) -> list[dict[str, Any]]:
    """Those of `rooms` that are private with the user a member, as `list_rooms` lists rooms."""
    cur.execute(
        """SELECT r.name, r.description, COALESCE((SELECT o.online FROM room_online o WHERE o.room = r.name), 0),
                  (SELECT count(*) FROM chat_members c WHERE c.room = r.name), true
           FROM rooms r JOIN chat_members m ON m.room = r.name AND m.user_id = %(me)s
           WHERE r.name = ANY(%(rooms)s) AND r.is_private""",
        {"me": user_id, "rooms": rooms},
    )
    return _listed_rooms(cur)


def my_rooms(cur, user_id: int, limit: int, offset: int = 0) -> list[MemberRoom]:
    """A page of the rooms the user is a member of, the most recently active first."""
    cur.execute(
        f"""SELECT room, last_seq, last_id, last_read_id, private, owner FROM (
               SELECT m.room, r.last_seq, m.last_read_id, r.is_private IS TRUE AS private,
                      m.role IS NOT DISTINCT FROM 'owner' AS owner, {ROOM_LAST_ID.format("m.room")} AS last_id
               FROM chat_members m JOIN rooms r ON r.name = m.room
               WHERE m.user_id = %(me)s
           ) mine ORDER BY last_id DESC, room LIMIT %(limit)s OFFSET %(offset)s""",
        {"me": user_id, "limit": limit, "offset": offset},
    )
    return [MemberRoom(*row) for row in cur]


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
    sql = f"{SELECT_MESSAGES} WHERE {where} ORDER BY m.id {order} LIMIT %s"
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
    sql, params = _page(DM_PAIR.format(low="%s", high="%s"), [min(me, other), max(me, other)], limit, before, after)
    cur.execute(sql, params)
    rows = [row_to_message(row) for row in cur]
    return rows if after is not None else rows[::-1]


def stream_bounds(alias: str, after_id: int, below_seq: int | None, up_to_id: int | None) -> tuple[str, list]:
    """The bounds of a page of a channel's stream, for the table aliased `alias`: id >
    after_id, and seq < below_seq and id <= up_to_id when given (" AND ..." and its params)."""
    sql, params = f" AND {alias}.id > %s", [after_id]
    if below_seq is not None:
        sql += f" AND {alias}.seq < %s"
        params.append(below_seq)
    if up_to_id is not None:
        sql += f" AND {alias}.id <= %s"
        params.append(up_to_id)
    return sql, params


def channel_after(
    cur, channel: tuple, after_id: int, below_seq: int | None, limit: int, up_to_id: int | None = None
) -> list[StoredMessage]:
    """Messages of a room or conversation within stream_bounds, the first `limit` in id order."""
    if channel[0] == "r":
        where, params = "m.room = %s", [channel[1]]
    else:
        where = DM_PAIR.format(low="%s", high="%s")
        params = [channel[1], channel[2]]
    bounds, bound_params = stream_bounds("m", after_id, below_seq, up_to_id)
    cur.execute(f"{SELECT_MESSAGES} WHERE {where}{bounds} ORDER BY m.id LIMIT %s", [*params, *bound_params, limit])
    return [row_to_message(row) for row in cur]


def messages_by_id(cur, ids: list[int]) -> list[StoredMessage]:
    cur.execute(
        f"{SELECT_MESSAGES} WHERE m.id = ANY(%s) ORDER BY m.id",
        (ids,),
    )
    return [row_to_message(row) for row in cur]


# A page of the user's conversations, newest first (then by partner), from dm_threads.last_id:
# the user is the lower id of some conversations and the higher of the others, so each side is
# read from its own index (dm_threads_low_last, dm_threads_high_last) in that order, and
# PostgreSQL merges the two: offset + limit entries of each at most, however many
# conversations the user has (a lookup of the newest message of each would grow with them).
# A conversation with oneself is read from the first side only.
# (CONVERSATIONS_OF: of user {me}, for a batch of users to give it theirs.)
CONVERSATIONS_OF = """
SELECT c.other, COALESCE(u.username, 'user' || c.other), c.last_id FROM (
    (SELECT t.user_high AS other, t.last_id FROM dm_threads t
     WHERE t.user_low = {me} AND t.last_id > 0 ORDER BY t.last_id DESC, t.user_high LIMIT %(end)s)
    UNION ALL
    (SELECT t.user_low, t.last_id FROM dm_threads t
     WHERE t.user_high = {me} AND t.user_low <> {me} AND t.last_id > 0
     ORDER BY t.last_id DESC, t.user_low LIMIT %(end)s)
    ORDER BY last_id DESC, other LIMIT %(limit)s OFFSET %(offset)s
) c LEFT JOIN users u ON u.id = c.other
ORDER BY c.last_id DESC, c.other"""
CONVERSATIONS = CONVERSATIONS_OF.format(me="%(me)s")


def conversations_of(cur, user_id: int, limit: int, offset: int = 0) -> list[dict[str, Any]]:
    """A page of the user's DM partners, the most recently active first.

    Each with the id of the conversation's newest message or event.
    """
    cur.execute(CONVERSATIONS, {"me": user_id, "limit": limit, "offset": offset, "end": offset + limit})
    return [{"userId": other, "username": name, "lastId": last_id} for other, name, last_id in cur]


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
    # the names it mentions (protocol.mentions_in), stored for the unread mention counts
    mentions: list[str] | None = None

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
        f"""{SELECT_MESSAGES}
            JOIN unnest(%s::bigint[], %s::text[]) AS k(from_user, client_id)
              ON m.from_user = k.from_user AND m.client_id = k.client_id
            WHERE m.client_id IS NOT NULL""",
        ([k[0] for k in keys], [k[1] for k in keys]),
    )
    found = [row_to_message(row) for row in cur]
    return {(m.data["fromUser"], m.data["clientId"]): m for m in found}


# One query stores a whole batch, so that in autocommit mode a group commit is one round
# trip and the rooms' row locks are held only while PostgreSQL runs it. Its statements
# (one query string runs in one transaction):
#   - lock the rooms' and conversations' rows first, in sorted order, so that two batches
#     (two pipelines, or two processes) never wait for each other crosswise;
#   - answer drafts whose (sender, clientId) is stored already with that message;
#   - number the others per room / conversation by bumping rooms.last_seq and
#     dm_threads.last_seq (the row lock orders commits within a room like ids), their ids
#     drawn under those locks, in draft order, so that the same update sets the
#     conversation's dm_threads.last_id;
#   - insert them, and (with a NOTIFY channel) announce them inside the same transaction,
#     so that listeners hear each exactly when it is committed, in commit order. A payload
#     over PostgreSQL's 8000-byte limit carries only the id; listeners fetch the rest.
# The payloads are those of app/bus.py ("<origin>|<json>", kinds "m" and "ref").
LOCK_ROOMS = "SELECT 1 FROM rooms WHERE name = ANY(%(lock_rooms)s) ORDER BY name FOR UPDATE"
# The plans of these statements are made once, maybe while the tables are still empty,
# and kept: so each statement reaches `messages`, `rooms` and `dm_threads` only by index
# lookups of the batch's own keys (LATERAL ... LIMIT 1 cannot become a hash join over the
# whole table: a plain join planned on an empty table would scan all of `messages`).
# A conversation's row is made here if missing (last_seq 0), so that it is locked, like an
# existing one, before the batch draws its ids: two batches starting the same conversation
# at once then draw their ids one after the other, in seq order. The conflict's update
# (`WHERE false`) locks the existing row and writes nothing.
LOCK_PAIRS = """
INSERT INTO dm_threads AS t (user_low, user_high)
SELECT w.low, w.high FROM unnest(%(lock_low)s, %(lock_high)s) AS w(low, high)
ON CONFLICT (user_low, user_high) DO UPDATE SET last_seq = t.last_seq WHERE false"""
_STORE = """
WITH input AS (
    SELECT d.ord - 1 AS ord, d.from_user, d.to_user, d.room, d.content, d.client_id, d.username, d.mentions,
           CASE WHEN d.to_user IS NULL THEN NULL ELSE LEAST(d.from_user, d.to_user) END AS low,
           CASE WHEN d.to_user IS NULL THEN NULL ELSE GREATEST(d.from_user, d.to_user) END AS high
    FROM ROWS FROM (json_to_recordset(%(drafts)s) AS (from_user bigint, to_user bigint, room text,
                    content text, client_id text, username text, mentions text[])) WITH ORDINALITY
         AS d(from_user, to_user, room, content, client_id, username, mentions, ord)
), earlier AS (
    SELECT d.ord, m.id FROM input d
    CROSS JOIN LATERAL (SELECT m.id FROM messages m
                        WHERE m.from_user = d.from_user AND m.client_id = d.client_id
                          AND m.client_id IS NOT NULL
                        LIMIT 1) AS m
    WHERE d.client_id IS NOT NULL
), fresh AS (
    SELECT d.*,
           row_number() OVER (PARTITION BY d.room, d.low, d.high ORDER BY d.ord) AS rank,
           count(*) OVER (PARTITION BY d.room, d.low, d.high) AS n
    FROM input d WHERE d.ord NOT IN (SELECT ord FROM earlier)
), drawn AS (
    SELECT f.*, nextval(pg_get_serial_sequence('messages', 'id')) AS id FROM fresh f ORDER BY f.ord
), room_heads AS (
    UPDATE rooms r SET last_seq = r.last_seq + c.n
    FROM (SELECT room, max(n) AS n FROM fresh WHERE room IS NOT NULL GROUP BY room ORDER BY room) AS c
    WHERE r.name = c.room AND r.name = ANY(%(lock_rooms)s)
    RETURNING r.name, r.last_seq
), pair_heads AS (
    INSERT INTO dm_threads AS t (user_low, user_high, last_seq, last_id)
    SELECT low, high, max(n), max(id) FROM drawn WHERE low IS NOT NULL GROUP BY low, high ORDER BY low, high
    ON CONFLICT (user_low, user_high) DO UPDATE SET last_seq = t.last_seq + EXCLUDED.last_seq,
                                                    last_id = EXCLUDED.last_id
    RETURNING user_low, user_high, last_seq
), numbered AS (
    SELECT f.*, COALESCE(rh.last_seq, ph.last_seq) - f.n + f.rank AS seq
    FROM drawn f
    LEFT JOIN room_heads rh ON rh.name = f.room
    LEFT JOIN pair_heads ph ON ph.user_low = f.low AND ph.user_high = f.high
), inserted AS (
    INSERT INTO messages (id, from_user, to_user, room, content, timestamp, client_id, seq, from_username, mentions)
    SELECT id, from_user, to_user, room, content, now(), client_id, seq, username, mentions FROM numbered ORDER BY ord
    ON CONFLICT (from_user, client_id) WHERE client_id IS NOT NULL DO NOTHING
    RETURNING id, seq, from_user, to_user, room, timestamp, client_id
), stored AS (
    SELECT n.ord, i.id, i.seq, i.room, i.to_user, i.client_id, n.username, n.content, n.from_user,
           {ts} AS ts
    FROM inserted i JOIN numbered n ON n.seq = i.seq AND n.from_user = i.from_user
         AND n.room IS NOT DISTINCT FROM i.room AND n.to_user IS NOT DISTINCT FROM i.to_user
)
SELECT ord, false AS duplicate, id, seq, ts, client_id {announce} FROM stored
UNION ALL
SELECT ord, true, id, 0, NULL, NULL {no_announce} FROM earlier
"""

_ANNOUNCE = """,
       pg_notify(%(channel)s, CASE WHEN octet_length(body) <= 7900 THEN body
                                   ELSE %(origin)s || '|' || json_build_object('k', 'ref', 'id', id)::text END)
       FROM (SELECT stored.*, %(origin)s || '|' || json_build_object(
                 'k', 'm', 's', seq, 'd', json_strip_nulls(json_build_object(
                     'id', id, 'fromUser', from_user, 'username', username, 'to', to_user,
                     'content', content, 'timestamp', ts, 'room', room, 'clientId', client_id)))::text AS body
             FROM stored) AS announced"""

# Prepared once per connection and planned once: planning this query costs PostgreSQL
# more than running it. Generic plans are forced on the group-commit connections, since
# the plan does not depend on the values; PostgreSQL's default choice (custom plans) would
# plan every batch again.
BATCH = PreparedStatements(
    {
        "chat_lock_rooms": LOCK_ROOMS,
        "chat_lock_pairs": LOCK_PAIRS,
        "chat_store": _STORE.format(announce="", no_announce="", ts=WIRE_TIMESTAMP.format("i.timestamp")),
        "chat_store_announce": _STORE.replace(" {announce} FROM stored\n", _ANNOUNCE + "\n").format(
            no_announce=", NULL", ts=WIRE_TIMESTAMP.format("i.timestamp")
        ),
    },
    types={
        "lock_rooms": "text[]",
        "lock_low": "bigint[]",
        "lock_high": "bigint[]",
        "drafts": "json",
        "channel": "text",
        "origin": "text",
    },
)


def prepare_batch_statements(cur) -> None:
    """Prepare the group-commit statements on a new connection (see BATCH), planned as
    prepared.PLANNER_SETTINGS says."""
    plan_as_prepared(cur)
    BATCH.prepare(cur)


@dataclass(frozen=True)
class BatchResult:
    """What became of one draft: stored now (with its seq), or stored before (a resend)."""

    ord: int
    duplicate: bool
    id: int
    seq: int
    timestamp: str | None


def batch_query(
    drafts: list[Draft], notify_channel: str | None, origin: str, statements: dict[str, str] = BATCH.execute
) -> tuple[str, dict]:
    """The query that stores `drafts`, and its parameters.

    `statements` gives the SQL run for each statement of BATCH: by default the EXECUTEs of
    what `prepare_batch_statements` prepared (bench/store_cost.py passes the statements
    written out, to measure them unprepared).
    """
    params = {
        # One JSON array of the drafts' fields (orjson writes dataclasses): psycopg2 quotes
        # one string instead of seven arrays' elements one by one, which costs much CPU.
        "drafts": orjson.dumps(drafts).decode(),
        "channel": notify_channel,
        "origin": origin,
    }
    params["lock_rooms"] = sorted({d.room for d in drafts if d.to_user is None})
    pairs = sorted({d.channel[1:] for d in drafts if d.to_user is not None})
    params["lock_low"] = [p[0] for p in pairs]
    params["lock_high"] = [p[1] for p in pairs]
    # Locks that would lock nothing are left out (most batches hold no DM).
    names = [name for name, needed in (("chat_lock_rooms", params["lock_rooms"]), ("chat_lock_pairs", pairs)) if needed]
    names.append("chat_store_announce" if notify_channel else "chat_store")
    return "; ".join(statements[name] for name in names), params


def store_batch(cur, drafts: list[Draft], notify_channel: str | None, origin: str) -> dict[int, BatchResult]:
    """Store drafts in one round trip; results by position in `drafts`.

    The cursor's connection must have run `prepare_batch_statements`.

    A draft missing from the result lost a race: another process stored its (sender,
    clientId) meanwhile. Its seq stays a hole that receivers skip.
    """
    cur.execute(*batch_query(drafts, notify_channel, origin))
    return {row[0]: BatchResult(*row[:5]) for row in cur.fetchall()}


def draft_message(draft: Draft, result: BatchResult) -> StoredMessage:
    """The stored message of a draft that was stored now."""
    data = message_data(
        result.id,
        draft.from_user,
        draft.username,
        draft.content,
        result.timestamp,
        draft.room,
        draft.to_user,
        draft.client_id,
    )
    return StoredMessage(id=result.id, seq=result.seq, data=data)


# --- who is connected, and finding people ---------------------------------------------------

_ALIVE_NODES = "SELECT node_id FROM chat_nodes WHERE heartbeat_at > now() - make_interval(secs => %(alive)s)"
# A name as `users` compares and orders it: the expression of the users_lower_username and
# user_presence_lower_username indexes (schema.sql), so that they serve both.
_SORT_NAME = 'lower({}.username) COLLATE "C"'
# The online users whose name starts with the prefix, from user_presence (a scan of what
# matches, however few of the users in that name range are online); then, only when they
# are fewer than the limit, the offline ones from users (skipping at most those few online).
FIND_USERS = f"""
WITH online AS MATERIALIZED (
    SELECT DISTINCT ON ({_SORT_NAME.format("p")}, p.user_id) p.user_id, {_SORT_NAME.format("p")} AS sort_name
    FROM user_presence p
    WHERE {_SORT_NAME.format("p")} LIKE lower(%(prefix)s) || '%%' AND p.node_id IN ({_ALIVE_NODES})
    ORDER BY {_SORT_NAME.format("p")}, p.user_id LIMIT %(limit)s
), offline AS (
    SELECT u.id, u.username, {_SORT_NAME.format("u")} AS sort_name FROM users u
    WHERE (SELECT count(*) FROM online) < %(limit)s
      AND {_SORT_NAME.format("u")} LIKE lower(%(prefix)s) || '%%'
      AND NOT EXISTS (SELECT 1 FROM user_presence p WHERE p.user_id = u.id AND p.node_id IN ({_ALIVE_NODES}))
    ORDER BY {_SORT_NAME.format("u")}, u.id LIMIT %(limit)s
)
SELECT id, username, online FROM (
    SELECT u.id, u.username, true AS online, o.sort_name FROM online o JOIN users u ON u.id = o.user_id
    UNION ALL
    SELECT id, username, false, sort_name FROM offline
) found ORDER BY NOT online, sort_name, id LIMIT %(limit)s"""


# The user's stored name (a user connected while the database was away may have no row yet).
_STORED_NAME = "COALESCE((SELECT s.username FROM users s WHERE s.id = {0}), 'user' || {0})"


def like_prefix(text: str) -> str:
    r"""`text` as the start of a LIKE pattern: its own %, _ and \ match only themselves."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def find_users(cur, prefix: str, limit: int, alive_seconds: float) -> list[dict[str, Any]]:
    """Up to `limit` users whose name starts with `prefix` (case-insensitive).

    The online ones first, each group in name order.
    """
    cur.execute(FIND_USERS, {"prefix": like_prefix(prefix), "limit": limit, "alive": alive_seconds})
    return [{"userId": user_id, "username": name, "online": online} for user_id, name, online in cur]


def add_users_online(cur, user_ids: list[int], node_id: str) -> None:
    """These users have a connection on this node (user_presence), one statement for all."""
    cur.execute(
        f"""INSERT INTO user_presence (user_id, node_id, username)
            SELECT here.user_id, %(node_id)s, {_STORED_NAME.format("here.user_id")}
            FROM unnest(%(users)s::bigint[]) AS here(user_id)
            ON CONFLICT DO NOTHING""",
        {"users": user_ids, "node_id": node_id},
    )


def remove_users_online(cur, user_ids: list[int], node_id: str) -> None:
    """These users' last connection on this node closed, one statement for all."""
    cur.execute(
        "DELETE FROM user_presence WHERE node_id = %(node_id)s AND user_id = ANY(%(users)s::bigint[])",
        {"users": user_ids, "node_id": node_id},
    )


def users_noted_online(cur, node_id: str) -> int:
    """How many users user_presence has on this node."""
    cur.execute("SELECT count(*) FROM user_presence WHERE node_id = %s", (node_id,))
    return cur.fetchone()[0]


def note_users_online(cur, user_ids: list[int], node_id: str) -> None:
    """Make this node's user_presence rows exactly `user_ids`."""
    cur.execute(
        "DELETE FROM user_presence WHERE node_id = %(node_id)s AND NOT user_id = ANY(%(users)s::bigint[])",
        {"node_id": node_id, "users": user_ids},
    )
    add_users_online(cur, user_ids, node_id)
