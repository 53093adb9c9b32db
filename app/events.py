"""Edit, delete, react, unreact (PROTOCOL.md §10): each one event in its message's stream.

One transaction per event: the message's row is locked and the request decided against it
(who may, and whether it changes anything); then the channel's row is locked for the
event's seq and id, the event and its change are stored, and (on the PostgreSQL bus)
announced. Only after the commit is anyone told, through the same gates as messages.

A request that changes nothing is a resend (PROTOCOL.md §10, docs/protocol.md): an edit
to the content of the message's latest edit, a delete of a deleted message, a react
already on, an unreact already off. It stores no event; the sending connection alone is
answered with the event that made the message so, its eventId unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import event_store, store
from .errors import Forbidden, NotFound
from .messages import ChannelKey, StoredEvent, StoredMessage
from .protocol import Command

if TYPE_CHECKING:
    from .connection import Connection
    from .runtime import ChatRuntime


def handle_event(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    """Serve an edit, delete, react or unreact (the command's type).

    Three round trips for an event: open the transaction and read the locked message with
    the checks; take the channel's row lock and the event's place; store, announce and
    commit. Only the last two hold the channel's lock, which the group commit of the
    channel's messages waits for. A resend reads the earlier event instead of the last two.
    """
    timeout_ms = round(rt.config["STORE_TIMEOUT_SECONDS"] * 1000)
    with rt.pool.explicit_transaction() as cur:
        locked = event_store.begin_and_lock(cur, command.message_id, conn.user_id, command.emoji, timeout_ms)
        if locked is None or not may_read(conn, locked.message, locked.hidden):
            raise NotFound(f"message {command.message_id} does not exist")
        check_allowed(conn, command.type, locked)
        event = answered_before(cur, conn, command, locked)
        fresh = event is None
        if fresh:
            event = record(rt, cur, conn, command, locked.message)
    if fresh:
        rt.deliver_stored_event(event)
    if not fresh or not rt.hub.receives(conn, event.channel):
        conn.send_frame(event.wire_frame)  # (a reader not joined to the room: its answer)


def may_read(conn: Connection, message: StoredMessage, hidden_room: bool) -> bool:
    """Whether the user can read the message: a party to its DM; for a room, what the
    history allows (a public room to anyone, a private one to its members)."""
    if message.is_dm:
        return conn.user_id in message.channel[1:]
    return not hidden_room


def check_allowed(conn: Connection, kind: str, locked: event_store.Locked) -> None:
    """Only the author edits; the author deletes, and so does the room's owner
    (chat_members.role: its creator); any reader reacts."""
    author = locked.message.data["fromUser"] == conn.user_id
    if kind == "edit" and not author:
        raise Forbidden("only its author may edit a message")
    if kind == "delete" and not author and not locked.owner:
        raise Forbidden("only its author (or the room's owner) may delete a message")


def answered_before(cur, conn: Connection, command: Command, locked: event_store.Locked) -> StoredEvent | None:
    """The event a request that changes nothing is answered with (None: it changes
    something). A deleted message takes no edit or reaction: it is gone."""
    kind, message_id, message = command.type, command.message_id, locked.message
    deleted = bool(message.data.get("deleted"))
    if kind == "delete":
        if not deleted:
            return None
        earlier = event_store.latest_event(cur, message_id, "delete")
        if earlier is None:  # (emptied by other means than a delete event)
            raise NotFound(f"message {message_id} was deleted")
        return earlier
    if deleted:
        raise NotFound(f"message {message_id} was deleted")
    if kind == "edit":
        if "editedAt" not in message.data or message.data["content"] != command.content:
            return None
        return event_store.latest_event(cur, message_id, "edit")
    if locked.reacted != (kind == "react"):
        return None
    earlier = event_store.latest_event(cur, message_id, kind, conn.user_id, command.emoji)
    if earlier is None:  # an unreact of a reaction never made
        raise NotFound(f"no {command.emoji} reaction of yours on message {message_id}")
    return earlier


def record(rt: ChatRuntime, cur, conn: Connection, command: Command, message: StoredMessage) -> StoredEvent:
    """Number, store, announce and commit the event."""
    channel: ChannelKey = message.channel
    numbered = event_store.next_in_channel(cur, channel)
    if numbered is None:
        raise NotFound(f"message {command.message_id} does not exist")
    seq, event_id, at = numbered
    event = event_store.make_event(
        event_id, seq, command.type, channel, message, conn.user_id, conn.username, command.emoji, command.content, at
    )
    announce = rt.bus.notify_payload(event)
    event_store.record_and_commit(cur, event, command.type, conn.user_id, conn.username, command.content, announce)
    return event


def channel_after(
    cur,
    channel: ChannelKey,
    after_id: int | None,
    below_seq: int | None,
    limit: int,
    from_seq: int = 0,
    up_to_id: int | None = None,
) -> list[StoredMessage]:
    """A channel's messages and events with id > after_id (and seq < below_seq, and id <=
    up_to_id): the first `limit` of them in id order (a replay's page, a gap fill's).
    `after_id` None: after the channel's last message or event numbered below `from_seq`."""
    if after_id is None:
        after_id = event_store.last_id_below(cur, channel, from_seq)
    messages = store.channel_after(cur, channel, after_id, below_seq, limit, up_to_id=up_to_id)
    events = event_store.events_after(cur, channel, after_id, below_seq, limit, up_to_id)
    if not events:
        return messages
    return sorted([*messages, *events], key=lambda item: item.id)[:limit]
