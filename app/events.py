"""Edit, delete, react, unreact (PROTOCOL.md §10): each one event in its message's stream.

A request is decided against its message as read (who may, and whether it changes
anything), then its event is numbered in the message's channel, stored with its change and
(on the PostgreSQL bus) announced, in one commit with the other events of its lane asked
meanwhile (app/event_batch.py). Only after the commit is anyone told, through the same
gates as messages.

A request that changes nothing is a resend (PROTOCOL.md §10, docs/protocol.md): an edit
to the content of the message's latest edit, a delete of a deleted message, a react
already on, an unreact already off. It stores no event; the sending connection alone is
answered with the event that made the message so, its eventId unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import event_store, store
from .errors import Forbidden, NotFound
from .event_batch import EventRequest
from .messages import ChannelKey, StoredEvent, StoredMessage
from .protocol import Command

if TYPE_CHECKING:
    from .connection import Connection
    from .runtime import ChatRuntime


def handle_event(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    """Serve an edit, delete, react or unreact (the command's type).

    A new event is delivered (to this connection too, when it receives the channel) before
    its sender is answered; a resend is answered to this connection alone.
    """
    event, fresh = rt.event_batches.ask(EventRequest(conn.user_id, conn.username, command))
    if not fresh or not rt.hub.receives(conn, event.channel):
        conn.send_frame(event.wire_frame)  # (a reader not joined to the room: its answer)


def decide(cur, request: EventRequest, read: event_store.Read | None) -> StoredEvent | event_store.Decided:
    """The earlier event that answers the request (a resend), or the event to store;
    raises NotFound or Forbidden for a request refused."""
    command = request.command
    if read is None or not may_read(request.user_id, read.message, read.hidden):
        raise NotFound(f"message {command.message_id} does not exist")
    check_allowed(request.user_id, command.type, read)
    earlier = answered_before(cur, request, read)
    if earlier is not None:
        return earlier
    return event_store.Decided(command.type, read, request.user_id, request.username, command.emoji, command.content)


def may_read(user_id: int, message: StoredMessage, hidden_room: bool) -> bool:
    """Whether the user can read the message: a party to its DM; for a room, what the
    history allows (a public room to anyone, a private one to its members)."""
    if message.is_dm:
        return user_id in message.channel[1:]
    return not hidden_room


def check_allowed(user_id: int, kind: str, read: event_store.Read) -> None:
    """Only the author edits; the author deletes, and so does the room's owner
    (chat_members.role: its creator); any reader reacts."""
    author = read.message.data["fromUser"] == user_id
    if kind == "edit" and not author:
        raise Forbidden("only its author may edit a message")
    if kind == "delete" and not author and not read.owner:
        raise Forbidden("only its author (or the room's owner) may delete a message")


def answered_before(cur, request: EventRequest, read: event_store.Read) -> StoredEvent | None:
    """The event a request that changes nothing is answered with (None: it changes
    something). A deleted message takes no edit or reaction: it is gone."""
    command = request.command
    kind, message_id, message = command.type, command.message_id, read.message
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
    if read.reacted != (kind == "react"):
        return None
    earlier = event_store.latest_event(cur, message_id, kind, request.user_id, command.emoji)
    if earlier is None:  # an unreact of a reaction never made
        raise NotFound(f"no {command.emoji} reaction of yours on message {message_id}")
    return earlier


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
