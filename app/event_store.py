"""The SQL of edits, deletes and reactions (PROTOCOL.md §10), and events read back.

An event is a row of `message_events` in its message's stream: its id comes from the
message id sequence and its seq from the room's (conversation's) last_seq, both taken
under that channel's row lock, like a message's. So the gates, gap fills and replays,
which order by seq and id, carry events with messages and need nothing of their own.

Events are stored many at a time (app/event_batch.py), in two round trips that hold no
lock between them: read_messages reads the messages the requests are about, with what
deciding each needs; store_events stores the ones decided to change something, each only
if its message is still as it was decided on (_STORE says what that is per kind), in one
transaction that holds the channels' row locks for that one round trip. A request whose
message changed between the two is decided again.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from . import protocol, store
from .db import BigintArray, TextArray
from .messages import ChannelKey, StoredEvent, StoredMessage
from .prepared import PreparedStatements
from .store import DM_PAIR, MESSAGE_COLUMNS, VISIBLE, WIRE_TIMESTAMP, row_to_message, stream_bounds

# The frame each kind of event is told with.
FRAME_OF = {"edit": "message_edited", "delete": "message_deleted", "react": "reaction", "unreact": "reaction"}

# The messages that requests are about, each with its row version and what deciding the
# request needs: whether its room is hidden from the user (private, and they no member),
# whether the user owns that room (who may delete), and whether their reaction with the
# request's emoji is on (a react or unreact that changes nothing). Each an index lookup.
# (Each check a scalar subquery with LIMIT 1: an EXISTS here may be planned as a hashed
# subplan, which reads every row of its table that matches the parts not about the row.)
READ_MESSAGES = f"""SELECT q.ord, m.xmin::text, {MESSAGE_COLUMNS},
           m.room IS NOT NULL AND (SELECT true FROM rooms r WHERE r.name = m.room
                                   AND {VISIBLE.replace("%(user_id)s", "q.user_id")} LIMIT 1) IS NULL,
           (SELECT true FROM chat_members o WHERE o.room = m.room AND o.user_id = q.user_id
            AND o.role = 'owner' LIMIT 1) IS NOT NULL,
           (SELECT true FROM message_reactions x WHERE x.message_id = m.id AND x.user_id = q.user_id
            AND x.emoji = q.emoji LIMIT 1) IS NOT NULL
    FROM unnest(%(ids)s, %(user_ids)s, %(emojis)s) WITH ORDINALITY AS q(id, user_id, emoji, ord)
    JOIN messages m ON m.id = q.id
    LEFT JOIN users u ON u.id = m.from_user"""

# Events with the message they are about, as row_to_event reads them.
SELECT_EVENTS = f"""SELECT e.id, e.seq, e.kind, e.room, e.user_low, e.user_high, e.user_id, e.username, e.emoji,
           e.content, {WIRE_TIMESTAMP.format("e.at")}, {MESSAGE_COLUMNS}
    FROM message_events e JOIN messages m ON m.id = e.message_id LEFT JOIN users u ON u.id = m.from_user"""
EVENT_FIELDS = 11

# The latest event of a kind about a message (and, for a reaction, of that user and emoji):
# what a resend is answered with. (A generic plan keeps the user test as a filter: the
# index on (message_id, id) still finds a message's few events.)
LATEST = f"""{SELECT_EVENTS}
    WHERE e.message_id = %(id)s AND e.kind = %(kind)s
      AND (%(user_id)s IS NULL OR (e.user_id = %(user_id)s AND e.emoji = %(emoji)s))
    ORDER BY e.id DESC LIMIT 1"""

# The summary of message `m`'s reactions that its row holds (schema.sql, messages.reactions),
# from the reaction rows of {0}: each emoji with its user ids in reaction order, the emoji in
# the order they first came. NULL when there are none.
REACTIONS_OF_M = """SELECT json_object_agg(emoji, users ORDER BY first) FROM (
            SELECT emoji, json_agg(user_id ORDER BY event_id) AS users, min(event_id) AS first
            FROM {0} x WHERE x.message_id = m.id GROUP BY emoji) AS by_emoji"""

# The locks _STORE needs, each set in one sorted order (messages, then rooms, then
# conversations), so that two batches never wait for each other crosswise; the group
# commit of messages takes rooms before conversations too (store.py). Each is a statement
# of its own: the statement after them takes its snapshot once they are granted, so it
# sees what the transactions it waited for committed.
LOCK_MESSAGES = "SELECT 1 FROM messages WHERE id = ANY(%(ids)s) ORDER BY id FOR UPDATE"
# The rooms' and conversations' locks are the group commit's own statements (a
# conversation's row is made if missing, as the group commit makes it).
LOCK_ROOMS = store.LOCK_ROOMS
LOCK_PAIRS = store.LOCK_PAIRS

# Stores a batch of decided events in one statement, in the transaction of the locks above:
#   - an event whose message is no longer as it was decided on is left out (no row comes
#     back for it: it is decided again). An edit must find the message's row version
#     (`xmin`) unchanged, since its frame shows the whole message; a delete, the message
#     not deleted; a reaction, the message not deleted and that user's reaction with that
#     emoji still off (a react) or on (an unreact);
#   - the others are numbered per channel under its row lock, their ids drawn then, in
#     request order (within a channel, id order is seq order and commit order, for events
#     and messages alike); a conversation's newest entry sets its last_id;
#   - each makes its change: an edit rewrites the content (and the mentions the unread
#     counts read); a delete erases the content wherever it is stored (the edits' copies
#     too) and leaves the row, a tombstone, so that ids, seqs and replies keep their place;
#     a reaction is added or taken away, and the message row's summary of its reactions
#     (emoji in the order they first came, user ids in reaction order) is written again;
#   - announced, with a NOTIFY channel, inside the transaction, so that listeners hear each
#     exactly at commit: the payload of app/bus.py's stored_event_payload, assembled from
#     the head and data the caller wrote, with the place and time known only here. One
#     over 7,900 bytes (PostgreSQL refuses 8,000) names the event only ("eref"): its
#     listeners read it from the database.
# The statement's parts see the tables as they were before it, and a row may be rewritten
# only once in it: so a batch holds an edit or a delete alone of its message, and a
# reaction of one (user, emoji) at most once (app/event_batch.py).
_STORE = f"""
WITH input AS (
    SELECT * FROM json_to_recordset(%(events)s) AS e(ord int, kind text, message_id bigint, version text,
        user_id bigint, username text, emoji text, content text, mentions text[], room text, low bigint,
        high bigint, head text, data text)
), guarded AS (
    SELECT i.* FROM input i
    CROSS JOIN LATERAL (
        SELECT 1 FROM messages m
        WHERE m.id = i.message_id
          AND CASE i.kind WHEN 'edit' THEN m.xmin::text = i.version
                          WHEN 'delete' THEN NOT m.deleted
                          ELSE NOT m.deleted
                               AND (SELECT true FROM message_reactions x WHERE x.message_id = m.id
                                    AND x.user_id = i.user_id AND x.emoji = i.emoji LIMIT 1) IS NULL
                                   = (i.kind = 'react') END
        LIMIT 1) AS same  -- (LIMIT: a lookup per event, never a join of all `messages`)
), ranked AS (
    SELECT g.*, row_number() OVER (PARTITION BY g.room, g.low, g.high ORDER BY g.ord) AS rank,
           count(*) OVER (PARTITION BY g.room, g.low, g.high) AS n
    FROM guarded g
), drawn AS (
    SELECT r.*, nextval(pg_get_serial_sequence('messages', 'id')) AS id FROM ranked r ORDER BY r.ord
), room_heads AS (
    UPDATE rooms r SET last_seq = r.last_seq + c.n
    FROM (SELECT room, max(n) AS n FROM ranked WHERE room IS NOT NULL GROUP BY room) AS c
    WHERE r.name = c.room AND r.name = ANY(%(lock_rooms)s)  -- (the array: an index lookup, as in store.py)
    RETURNING r.name, r.last_seq
), pair_heads AS (
    UPDATE dm_threads t SET last_seq = t.last_seq + c.n, last_id = c.last_id
    FROM (SELECT low, high, max(n) AS n, max(id) AS last_id FROM drawn WHERE low IS NOT NULL
          GROUP BY low, high) AS c
    WHERE t.user_low = c.low AND t.user_high = c.high
    RETURNING t.user_low, t.user_high, t.last_seq
), numbered AS (
    SELECT d.*, COALESCE(rh.last_seq, ph.last_seq) - d.n + d.rank AS seq,
           {WIRE_TIMESTAMP.format("now()")} AS ts
    FROM drawn d
    LEFT JOIN room_heads rh ON rh.name = d.room
    LEFT JOIN pair_heads ph ON ph.user_low = d.low AND ph.user_high = d.high
    WHERE COALESCE(rh.last_seq, ph.last_seq) IS NOT NULL
), inserted AS (
    INSERT INTO message_events (id, seq, room, user_low, user_high, kind, message_id, user_id, username,
                                emoji, content, at)
    SELECT id, seq, room, low, high, kind, message_id, user_id, username, emoji, content, now()
    FROM numbered ORDER BY id
), edited AS (
    UPDATE messages m SET content = n.content, edited_at = now(), mentions = n.mentions
    FROM numbered n WHERE n.kind = 'edit' AND m.id = n.message_id
), deleted AS (
    UPDATE messages m SET content = '', deleted = true, reactions = NULL, mentions = NULL
    FROM numbered n WHERE n.kind = 'delete' AND m.id = n.message_id
), erased AS (
    UPDATE message_events e SET content = NULL
    FROM numbered n WHERE n.kind = 'delete' AND e.message_id = n.message_id AND e.content IS NOT NULL
), unreacted AS (
    DELETE FROM message_reactions x USING numbered n
    WHERE x.message_id = n.message_id
      AND (n.kind = 'delete' OR (n.kind = 'unreact' AND x.user_id = n.user_id AND x.emoji = n.emoji))
), reacted AS (
    INSERT INTO message_reactions (message_id, user_id, emoji, event_id)
    SELECT message_id, user_id, emoji, id FROM numbered WHERE kind = 'react'
), reactions_now AS (
    SELECT x.message_id, x.emoji, x.user_id, x.event_id FROM message_reactions x
    WHERE x.message_id IN (SELECT message_id FROM numbered WHERE kind IN ('react', 'unreact'))
      AND NOT EXISTS (SELECT 1 FROM numbered u WHERE u.kind = 'unreact' AND u.message_id = x.message_id
                      AND u.user_id = x.user_id AND u.emoji = x.emoji)
    UNION ALL
    SELECT message_id, emoji, user_id, id FROM numbered WHERE kind = 'react'
), summed AS (
    UPDATE messages m SET reactions = ({REACTIONS_OF_M.format("reactions_now")})
    FROM (SELECT DISTINCT message_id FROM numbered WHERE kind IN ('react', 'unreact')) AS n
    WHERE m.id = n.message_id
)
SELECT ord, id, seq, ts {{announce}} FROM numbered
"""
_ANNOUNCE = """,
       pg_notify(%(channel)s, CASE WHEN octet_length(body) <= 7900 THEN body
                                   ELSE %(origin)s || '|' || json_build_object('k', 'eref', 'id', id)::text END)
       FROM (SELECT numbered.*, %(origin)s || '|{"k":"e","s":' || seq || ',"id":' || id || ',' || head
                    || CASE WHEN kind = 'edit' THEN left(data, -1) || ',"editedAt":' || to_json(ts)::text || '}'
                            ELSE data END
                    || '}' AS body
             FROM numbered ORDER BY id) AS announced"""

# Every statement of an event, prepared on every connection of the pool (by
# runtime.prepare_pool_statements), since parsing and planning them costs PostgreSQL more
# than running them. Each reaches its rows by key, so a generic plan is right whatever the
# parameters (tests/test_db.py checks them on tables grown after planning).
STATEMENTS = PreparedStatements(
    {
        "chat_event_messages": READ_MESSAGES,
        "chat_event_latest": LATEST,
        "chat_event_lock_messages": LOCK_MESSAGES,
        "chat_event_lock_rooms": LOCK_ROOMS,
        "chat_event_lock_pairs": LOCK_PAIRS,
        "chat_event_store": _STORE.replace(" {announce}", ""),
        "chat_event_store_announce": _STORE.replace(" {announce} FROM numbered\n", _ANNOUNCE + "\n"),
    },
    types={
        "ids": "bigint[]",
        "user_ids": "bigint[]",
        "emojis": "text[]",
        "id": "bigint",
        "user_id": "bigint",
        "emoji": "text",
        "kind": "text",
        "lock_rooms": "text[]",
        "lock_low": "bigint[]",
        "lock_high": "bigint[]",
        "events": "json",
        "channel": "text",
        "origin": "text",
    },
)
_EXECUTE = STATEMENTS.execute


class Read(NamedTuple):
    """A message a request is about, as read, and what deciding the request needs of it."""

    message: StoredMessage
    version: str  # its row version (xmin): an edit is stored only on this one (_STORE)
    hidden: bool  # its room is private, and the user no member (or it has no room any more)
    owner: bool  # the user owns its room
    reacted: bool  # the user's reaction with the request's emoji is on it


def read_messages(cur, requests: list[tuple[int, int, str | None]]) -> list[Read | None]:
    """For each (message id, user id, emoji), the message as read now (None: unknown)."""
    cur.execute(
        _EXECUTE["chat_event_messages"],
        {
            "ids": BigintArray(r[0] for r in requests),
            "user_ids": BigintArray(r[1] for r in requests),
            "emojis": TextArray(r[2] or "" for r in requests),  # (no emoji: matches no reaction)
        },
    )
    found: list[Read | None] = [None] * len(requests)
    for row in cur:
        hidden, owner, reacted = row[-3:]
        found[row[0] - 1] = Read(row_to_message(row[2:-3]), row[1], hidden, owner, reacted)
    return found


class Decided(NamedTuple):
    """An event to store: what it does, and what it was decided on."""

    kind: str
    read: Read
    user_id: int
    username: str
    emoji: str | None
    content: str | None


def store_events(cur, decided: list[Decided], notify_channel: str | None, origin: str) -> dict[int, StoredEvent]:
    """Store the events in one transaction (the cursor's connection in autocommit: one
    query string is one); by position, each event stored. One missing was not stored: its
    message changed since it was read."""
    rows = []
    # Each event as make_event builds it, but for what only the statement knows (its id,
    # seq and time): the frame data goes into the announcement, then into the event.
    events = []
    for ord, d in enumerate(decided):
        message = d.read.message
        channel = message.channel
        event = make_event(0, 0, d.kind, channel, message, d.user_id, d.username, d.emoji, d.content, "")
        events.append(event)
        data = event.data
        if d.kind == "edit":
            del data["editedAt"]  # (the statement appends it, with its time)
        rows.append(
            {
                "ord": ord,
                "kind": d.kind,
                "message_id": message.id,
                "version": d.read.version,
                "user_id": d.user_id,
                "username": d.username,
                "emoji": d.emoji,
                "content": d.content,
                "mentions": protocol.mentions_in(d.content) if d.kind == "edit" and d.content else None,
                "room": channel[1] if channel[0] == "r" else None,
                "low": channel[1] if channel[0] == "d" else None,
                "high": channel[2] if channel[0] == "d" else None,
                "head": '"t":'
                + orjson.dumps(FRAME_OF[d.kind]).decode()
                + ',"c":'
                + orjson.dumps(channel).decode()
                + ',"d":',
                "data": orjson.dumps(data).decode(),
            }
        )
    channels = {d.read.message.channel for d in decided}
    pairs = sorted(c[1:] for c in channels if c[0] == "d")
    params = {
        "ids": BigintArray(sorted({d.read.message.id for d in decided})),
        "lock_rooms": TextArray(sorted(c[1] for c in channels if c[0] == "r")),
        "lock_low": BigintArray(p[0] for p in pairs),
        "lock_high": BigintArray(p[1] for p in pairs),
        "events": orjson.dumps(rows).decode(),
        "channel": notify_channel,
        "origin": origin,
    }
    statements = ["chat_event_lock_messages"]
    if params["lock_rooms"]:
        statements.append("chat_event_lock_rooms")
    if pairs:
        statements.append("chat_event_lock_pairs")
    statements.append("chat_event_store_announce" if notify_channel else "chat_event_store")
    cur.execute("; ".join(_EXECUTE[name] for name in statements), params)
    stored = {}
    for ord, event_id, seq, at, *_announced in cur.fetchall():
        event = events[ord]
        event.id, event.seq = event_id, seq
        if decided[ord].kind == "edit":
            event.data["editedAt"] = at
        stored[ord] = event
    return stored


def latest_event(cur, message_id: int, kind: str, user_id: int | None = None, emoji: str | None = None):
    """The latest event of `kind` about the message (of that user and emoji), or None."""
    cur.execute(_EXECUTE["chat_event_latest"], {"id": message_id, "kind": kind, "user_id": user_id, "emoji": emoji})
    row = cur.fetchone()
    return None if row is None else row_to_event(row)


def row_to_event(row: tuple) -> StoredEvent:
    """An event from a SELECT_EVENTS row, with its message as it is now."""
    id, seq, kind, room, low, high, user_id, username, emoji, content, at = row[:EVENT_FIELDS]
    message = row_to_message(row[EVENT_FIELDS:])
    channel = ("r", room) if room is not None else ("d", low, high)
    return make_event(id, seq, kind, channel, message, user_id, username, emoji, content, at)


def make_event(
    id: int,
    seq: int,
    kind: str,
    channel: ChannelKey,
    message: StoredMessage,
    user_id: int,
    username: str,
    emoji: str | None,
    content: str | None,
    at: str,
) -> StoredEvent:
    """The event's frame data (PROTOCOL.md §10). An edit shows the message with the edit's
    content; once the message is deleted, its tombstone (the content is erased)."""
    data: dict[str, Any]
    if kind == "edit":
        data = dict(message.data)
        if not data.get("deleted"):
            data["content"] = content
        data["editedAt"] = at
    elif kind == "delete":
        data = {"id": message.id}
        if message.is_dm:
            data["to"] = message.data["to"]
        else:
            data["room"] = message.data["room"]
        data["fromUser"] = message.data["fromUser"]
    else:
        data = {"id": message.id, "emoji": emoji, "userId": user_id, "username": username, "on": kind == "react"}
    return StoredEvent(id=id, seq=seq, data=data, kind=FRAME_OF[kind], event_channel=channel)


def events_after(
    cur, channel: ChannelKey, after_id: int, below_seq: int | None, limit: int, up_to_id: int | None = None
) -> list[StoredEvent]:
    """Events of a room or conversation within store.stream_bounds, the first `limit` in id order."""
    if channel[0] == "r":
        where, params = "e.room = %s", [channel[1]]
    else:
        where, params = "e.user_low = %s AND e.user_high = %s", [channel[1], channel[2]]
    bounds, bound_params = stream_bounds("e", after_id, below_seq, up_to_id)
    cur.execute(f"{SELECT_EVENTS} WHERE {where}{bounds} ORDER BY e.id LIMIT %s", [*params, *bound_params, limit])
    return [row_to_event(row) for row in cur]


def last_id_below(cur, channel: ChannelKey, from_seq: int) -> int:
    """The id of the channel's last message or event numbered below `from_seq` (0: none):
    where a gate that never knew its last id resumes (within a channel ids grow with seq)."""
    if channel[0] == "r":
        messages, events, params = "m.room = %(room)s", "e.room = %(room)s", {"room": channel[1]}
    else:
        messages = DM_PAIR.format(low="%(low)s", high="%(high)s")
        events = "e.user_low = %(low)s AND e.user_high = %(high)s"
        params = {"low": channel[1], "high": channel[2]}
    cur.execute(
        f"""SELECT GREATEST(
               COALESCE((SELECT m.id FROM messages m WHERE {messages} AND m.seq < %(seq)s
                         ORDER BY m.id DESC LIMIT 1), 0),
               COALESCE((SELECT e.id FROM message_events e WHERE {events} AND e.seq < %(seq)s
                         ORDER BY e.id DESC LIMIT 1), 0))""",
        {**params, "seq": from_seq},
    )
    return cur.fetchone()[0]


def events_by_id(cur, ids: list[int]) -> list[StoredEvent]:
    cur.execute(f"{SELECT_EVENTS} WHERE e.id = ANY(%s) ORDER BY e.id", (ids,))
    return [row_to_event(row) for row in cur]
