"""The SQL of edits, deletes and reactions (PROTOCOL.md §10), and events read back.

An event is a row of `message_events` in its message's stream: its id comes from the
message id sequence and its seq from the room's (conversation's) last_seq, both taken
under that channel's row lock, like a message's. So the gates, gap fills and replays,
which order by seq and id, carry events with messages and need nothing of their own.
Every function takes a cursor inside a transaction the caller owns, but two: an event's
transaction is opened by begin_and_lock and committed by record_and_commit, each in the
round trip of its first (last) statements (the statements are prepared: STATEMENTS).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from . import protocol
from .messages import ChannelKey, StoredEvent, StoredMessage
from .prepared import PreparedStatements
from .store import DM_PAIR, MESSAGE_COLUMNS, VISIBLE, WIRE_TIMESTAMP, row_to_message, stream_bounds

# The frame each kind of event is told with.
FRAME_OF = {"edit": "message_edited", "delete": "message_deleted", "react": "reaction", "unreact": "reaction"}

# The message an event is about, locked until the event commits: two edits (or a react and
# its unreact) of one message are decided one after the other, each seeing the other's
# outcome. The lock is a statement of its own: the next one, which reads the message and
# what deciding the request needs, then takes its snapshot after the lock is granted, so
# it sees what the transaction it waited for committed (in the locking statement, the
# subqueries would read from before the wait: a react sent twice at once would be
# recorded twice). It reads whether the message's room is hidden from the user (private,
# and they no member), whether the user owns that room (who may delete), and whether
# their reaction with the request's emoji is on (a react or unreact that changes nothing):
# each an index lookup, cheaper than a round trip of its own.
LOCK_MESSAGE = "SELECT 1 FROM messages WHERE id = %(id)s FOR UPDATE"
READ_MESSAGE = f"""SELECT {MESSAGE_COLUMNS},
           m.room IS NOT NULL AND NOT EXISTS (SELECT 1 FROM rooms r WHERE r.name = m.room AND {VISIBLE}),
           EXISTS (SELECT 1 FROM chat_members o WHERE o.room = m.room AND o.user_id = %(user_id)s
                   AND o.role = 'owner'),
           EXISTS (SELECT 1 FROM message_reactions x WHERE x.message_id = m.id AND x.user_id = %(user_id)s
                   AND x.emoji = %(emoji)s)
    FROM messages m LEFT JOIN users u ON u.id = m.from_user
    WHERE m.id = %(id)s"""

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

# The next place in the channel's stream, under its row lock (held until commit), and the
# event's id drawn only then: within a channel, id order is then seq order and commit order,
# for events and messages alike (the group commit draws its ids under the same lock). A
# conversation's event is its newest entry: its id is the conversation's last_id.
_NEXT_ID = "nextval(pg_get_serial_sequence('messages', 'id'))"
NEXT_IN_ROOM = f"""UPDATE rooms SET last_seq = last_seq + 1 WHERE name = %(room)s
    RETURNING last_seq, {_NEXT_ID}, {WIRE_TIMESTAMP.format("now()")}"""
# (The id of VALUES is drawn before the conflict is known, so a conversation that has its
# row, nearly always, leaves it unused, a gap in the sequence: the SET draws another under
# the lock.)
NEXT_IN_PAIR = f"""INSERT INTO dm_threads AS t (user_low, user_high, last_seq, last_id)
    VALUES (%(low)s, %(high)s, 1, {_NEXT_ID})
    ON CONFLICT (user_low, user_high) DO UPDATE SET last_seq = t.last_seq + 1, last_id = {_NEXT_ID}
    RETURNING last_seq, last_id, {WIRE_TIMESTAMP.format("now()")}"""

INSERT_EVENT = """INSERT INTO message_events (id, seq, room, user_low, user_high, kind, message_id, user_id, username,
                                emoji, content, at)
    VALUES (%(event_id)s, %(seq)s, %(room)s, %(low)s, %(high)s, %(kind)s, %(id)s, %(user_id)s, %(username)s,
            %(emoji)s, %(content)s, now())"""
# A message's reactions as the message row shows them: emoji in the order they first came,
# user ids in reaction order. (A statement after the reaction's own, so that it sees it.)
REACTIONS = """UPDATE messages SET reactions = (
        SELECT json_object_agg(emoji, users ORDER BY first) FROM (
            SELECT emoji, json_agg(user_id ORDER BY event_id) AS users, min(event_id) AS first
            FROM message_reactions WHERE message_id = %(id)s GROUP BY emoji) AS by_emoji)
    WHERE id = %(id)s"""
NOTIFY = "SELECT pg_notify(%(channel)s, %(payload)s)"

# Every statement of an event, prepared on every connection of the pool (by
# runtime.prepare_pool_statements), since parsing and planning them costs PostgreSQL more
# than running them. Each is a lookup by key, so a generic plan is right whatever the
# parameters (tests/test_db.py checks them on tables grown after planning).
STATEMENTS = PreparedStatements(
    {
        "chat_event_lock": LOCK_MESSAGE,
        "chat_event_message": READ_MESSAGE,
        "chat_event_latest": LATEST,
        "chat_event_next_in_room": NEXT_IN_ROOM,
        "chat_event_next_in_pair": NEXT_IN_PAIR,
        "chat_event_insert": INSERT_EVENT,
        # The mentions follow the content: the unread mention counts read them (read_state.py).
        "chat_event_edit": """UPDATE messages SET content = %(content)s, edited_at = now(), mentions = %(mentions)s
            WHERE id = %(id)s""",
        # The content is erased wherever it is stored (the edits' copies too); the row stays,
        # a tombstone, so that ids, seqs and replies keep their place.
        "chat_event_delete": """UPDATE messages SET content = '', deleted = true, reactions = NULL, mentions = NULL
            WHERE id = %(id)s""",
        "chat_event_delete_reactions": "DELETE FROM message_reactions WHERE message_id = %(id)s",
        "chat_event_erase_edits": """UPDATE message_events SET content = NULL
            WHERE message_id = %(id)s AND content IS NOT NULL""",
        "chat_event_react": """INSERT INTO message_reactions (message_id, user_id, emoji, event_id)
            VALUES (%(id)s, %(user_id)s, %(emoji)s, %(event_id)s)""",
        "chat_event_unreact": """DELETE FROM message_reactions
            WHERE message_id = %(id)s AND user_id = %(user_id)s AND emoji = %(emoji)s""",
        "chat_event_reactions": REACTIONS,
        "chat_event_notify": NOTIFY,
    },
    types={
        "id": "bigint",
        "user_id": "bigint",
        "emoji": "text",
        "kind": "text",
        "room": "text",
        "low": "bigint",
        "high": "bigint",
        "event_id": "bigint",
        "seq": "bigint",
        "username": "text",
        "content": "text",
        "mentions": "text[]",
        "channel": "text",
        "payload": "text",
    },
)
_EXECUTE = STATEMENTS.execute

# Opens the event's transaction and reads the locked message, in one round trip: the
# statement timeout is the transaction's (a lock held by a stuck transaction must not keep
# the sender waiting for good).
BEGIN_AND_LOCK = "; ".join(
    [
        "BEGIN",
        "SET LOCAL statement_timeout = %(timeout)s",
        _EXECUTE["chat_event_lock"],
        _EXECUTE["chat_event_message"],
    ]
)
# What each kind changes, in the event's transaction.
APPLY = {
    "edit": [_EXECUTE["chat_event_edit"]],
    "delete": [
        _EXECUTE["chat_event_delete"],
        _EXECUTE["chat_event_delete_reactions"],
        _EXECUTE["chat_event_erase_edits"],
    ],
    "react": [_EXECUTE["chat_event_react"], _EXECUTE["chat_event_reactions"]],
    "unreact": [_EXECUTE["chat_event_unreact"], _EXECUTE["chat_event_reactions"]],
}


class Locked(NamedTuple):
    """A message locked for an event, and what deciding the request needs of it."""

    message: StoredMessage
    hidden: bool  # its room is private, and the user no member
    owner: bool  # the user owns its room
    reacted: bool  # the user's reaction with the request's emoji is on it


def begin_and_lock(cur, message_id: int, user_id: int, emoji: str | None, timeout_ms: int) -> Locked | None:
    """Open the event's transaction (on an autocommit connection: Pool.explicit_transaction),
    with its statement timeout, and lock the message in it until commit; None if unknown."""
    params = {"id": message_id, "user_id": user_id, "emoji": emoji, "timeout": f"{timeout_ms}ms"}
    cur.execute(BEGIN_AND_LOCK, params)
    row = cur.fetchone()
    if row is None:
        return None
    hidden, owner, reacted = row[-3:]
    return Locked(row_to_message(row[:-3]), hidden, owner, reacted)


def latest_event(cur, message_id: int, kind: str, user_id: int | None = None, emoji: str | None = None):
    """The latest event of `kind` about the message (of that user and emoji), or None."""
    cur.execute(_EXECUTE["chat_event_latest"], {"id": message_id, "kind": kind, "user_id": user_id, "emoji": emoji})
    row = cur.fetchone()
    return None if row is None else row_to_event(row)


def next_in_channel(cur, channel: ChannelKey) -> tuple[int, int, str] | None:
    """(seq, event id, timestamp) of a new event of the channel, its row locked; None when
    the room has no row (a message of a room removed under it)."""
    if channel[0] == "r":
        cur.execute(_EXECUTE["chat_event_next_in_room"], {"room": channel[1]})
    else:
        cur.execute(_EXECUTE["chat_event_next_in_pair"], {"low": channel[1], "high": channel[2]})
    return cur.fetchone()


def record_and_commit(
    cur, event: StoredEvent, kind: str, user_id: int, username: str, content: str | None, announce: tuple | None
) -> None:
    """Store the event and the change it makes; with `announce` (NOTIFY channel, payload),
    announce it in the same transaction, so that listeners hear it exactly at commit.

    The commit goes in the same round trip: the channel's row lock (next_in_channel) is
    held until it, and the group commit of the channel's messages waits for it. An error
    stops the string before the COMMIT: the transaction is left failed, for the caller's
    rollback (Pool.explicit_transaction)."""
    channel = event.channel
    params: dict[str, Any] = {
        "event_id": event.id,
        "seq": event.seq,
        "room": channel[1] if channel[0] == "r" else None,
        "low": channel[1] if channel[0] == "d" else None,
        "high": channel[2] if channel[0] == "d" else None,
        "kind": kind,
        "id": event.data["id"],
        "user_id": user_id,
        "username": username,
        "emoji": event.data.get("emoji"),
        "content": content,
        "mentions": protocol.mentions_in(content) if kind == "edit" and content else None,
    }
    statements = [_EXECUTE["chat_event_insert"], *APPLY[kind]]
    if announce is not None:
        statements.append(_EXECUTE["chat_event_notify"])
        params["channel"], params["payload"] = announce
    cur.execute("; ".join([*statements, "COMMIT"]), params)


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
