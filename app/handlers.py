"""What each client command does: the routing table from frame type to action."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NoReturn

from . import event_store, events, protocol, read_state, search, store
from .connection import Connection
from .errors import ChatError, NotFound, NotJoined, RateLimited, Unauthorized
from .membership import room_item, room_not_found
from .messages import StoredMessage, dm_channel
from .protocol import Command
from .runtime import ChatRuntime
from .tokens import verify_configured
from .wsframe import text_frame

log = logging.getLogger(__name__)

Handler = Callable[[ChatRuntime, Connection, Command], None]


def dispatch(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    HANDLERS[command.type](rt, conn, command)


def handle_auth(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    """A fresh token of the same user keeps the connection open past the old one's expiry."""
    identity = verify_configured(command.token, rt.config)
    if identity.user_id != conn.user_id:
        raise Unauthorized("token is for another user: open a new connection to switch users")
    conn.token_expires_at = identity.expires_at
    conn.send(protocol.auth_ok_frame(conn.user_id, identity.expires_at))


def handle_ping(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    conn.send_frame(PONG_FRAME)


def handle_join(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    rt.membership.read_ahead(conn, command.room, command.since, lambda: queued_joins(rt, conn))
    join_room(rt, conn, command.room, command.since)


def queued_joins(rt: ChatRuntime, conn: Connection) -> list[tuple[str, int | None]]:
    """(room, since) of each join the client has sent that waits its turn (read already)."""
    joins = []
    for raw in conn.core.queued_messages():
        try:
            command = protocol.parse_frame(raw, rt.limits)
        except ChatError:
            continue  # answered in its turn
        if command.type == "join":
            joins.append((command.room, command.since))
    return joins


def join_room(rt: ChatRuntime, conn: Connection, room: str, since: int | None = None) -> None:
    """Make the user a member of the room, then replay to this connection if asked."""
    joined = rt.membership.join(conn, room, since, create_room=rt.config["ROOMS_AUTO_CREATE"])
    if joined is None:
        raise_not_entered(rt, room)
    if joined.since is not None:
        rt.membership.replay(conn, room, joined.since, joined.up_to, joined.page)


def raise_not_entered(rt: ChatRuntime, room: str) -> None:
    """Raise why a join found no room.

    It does not exist (or is private), or, where joining creates rooms, the user has created
    as many as they may for now.
    """
    if rt.config["ROOMS_AUTO_CREATE"]:
        with rt.pool.autocommit() as cur:
            if not store.room_named(cur, room):
                limit = rt.config["ROOMS_CREATE_PER_MINUTE"]
                raise RateLimited(f"too many rooms created: at most {limit} a minute; join an existing one or wait")
    raise room_not_found(room)


def refuse_non_member(rt: ChatRuntime, conn: Connection, room: str, why: str | None = None) -> NoReturn:
    """Refuse a room frame from a connection not in the room.

    `not_joined` (saying `why`) for a public room, `not_found` for one that does not exist
    for the user (unknown, or private): PROTOCOL.md §4 never tells those two apart.
    """
    with rt.pool.autocommit() as cur:
        if not store.room_visible(cur, room, conn.user_id):
            raise room_not_found(room)
    raise NotJoined(why or f"not joined to room '{room}'")


def handle_leave(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    if command.room not in conn.rooms:
        refuse_non_member(rt, conn, command.room, f"not a member of room '{command.room}'")
    rt.membership.leave(conn, command.room)


def handle_message(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    if command.room not in conn.rooms:
        if not conn.legacy:
            refuse_non_member(rt, conn, command.room, f"join room '{command.room}' before sending to it")
        # The earlier server took messages to rooms without a join, and its clients rely
        # on it (PROTOCOL.md §7): the sender becomes a member first, as by `join`.
        join_room(rt, conn, command.room)
    send(rt, conn, command)


def handle_dm(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    ensure_user_exists(rt, command.to)
    send(rt, conn, command)


def send(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    """Store a room message or DM (group commit); a resend of its clientId is answered
    with the message stored before."""
    draft = store.Draft(
        conn.user_id,
        conn.username,
        command.content,
        room=command.room,
        to_user=command.to,
        client_id=command.client_id,
        mentions=protocol.mentions_in(command.content),
    )
    outcome = rt.batcher.submit(draft, conn)
    if outcome.duplicate:
        answer_resend(conn, outcome.message)


def answer_resend(conn: Connection, stored: StoredMessage) -> None:
    """Answer a clientId sent again with the message stored under it, as if it had just been sent.

    PROTOCOL.md §2; in the frame of its own kind whatever the resend was.
    """
    if stored.is_dm:
        conn.send(protocol.dm_sent_frame(stored.data))
    else:
        conn.send_frame(stored.wire_frame)


def ensure_user_exists(rt: ChatRuntime, user_id: int) -> None:
    if user_id in rt.known_users:
        return
    with rt.pool.autocommit() as cur:
        exists = store.user_exists(cur, user_id)
    if not exists:
        raise NotFound(f"user {user_id} does not exist")
    rt.known_users.add(user_id)


def handle_room_history(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    with rt.pool.autocommit() as cur:
        if command.room not in conn.rooms and not store.room_visible(cur, command.room, conn.user_id):
            raise room_not_found(command.room)
        messages = store.room_history(cur, command.room, command.limit, command.before, command.after)
    conn.send(protocol.room_history_frame(command, [m.data for m in messages]))
    if conn.legacy:
        # What the earlier server's clients render: one untyped frame per message.
        for message in messages:
            conn.send(protocol.legacy_history_entry(message.data))


def handle_dm_history(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    """A page of the conversation; a catch-up (`after`) also carries the events since."""
    ensure_user_exists(rt, command.to)
    if command.after is not None:
        dm_catch_up(rt, conn, command)
        return
    with rt.pool.autocommit() as cur:
        messages = store.dm_history(cur, conn.user_id, command.to, command.limit, command.before)
    conn.send(protocol.dm_history_frame(command, [m.data for m in messages]))


def dm_catch_up(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    """The messages after `after`, and the edits, deletes and reactions since, in one answer.

    The messages are shown as they are now, but a client that had older ones learns of
    their changes only from the events (a room's `join` with `since` replays them too).
    One snapshot for both reads: an event in the answer is about a message the client has
    (or gets in this answer); whatever commits later comes live. The events end where the
    page does (its last message, when the page is full: the next page carries the rest),
    and at DM_CATCH_UP_EVENTS, when the answer says `more` and the client asks again after
    the last eventId. With `before` too, both stop below it.
    """
    cap = rt.config["DM_CATCH_UP_EVENTS"]
    with rt.pool.transaction() as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        messages = store.dm_history(cur, conn.user_id, command.to, command.limit, command.before, command.after)
        if len(messages) >= command.limit:
            up_to = messages[-1].id
        else:
            up_to = None if command.before is None else command.before - 1
        channel = dm_channel(conn.user_id, command.to)
        found = event_store.events_after(cur, channel, command.after, None, cap + 1, up_to)
    more = len(found) > cap
    events_data = [protocol.EVENT_FRAMES[e.kind](e.id, e.data) for e in found[:cap]]
    conn.send(protocol.dm_history_frame(command, [m.data for m in messages], events_data, more))


def handle_typing(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    if command.to is not None:
        handle_dm_typing(rt, conn, command)
        return
    if command.room not in conn.rooms:
        refuse_non_member(rt, conn, command.room)
    rt.publish_typing(command.room, conn.user_id, conn.username)


def handle_dm_typing(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    """Tell every connection of the recipient that the user is typing to them.

    Typing to oneself tells nobody (the sender's own connections never get their typing) and
    is not an error: a DM to oneself is allowed.
    """
    ensure_user_exists(rt, command.to)
    if command.to != conn.user_id:
        rt.publish_dm_typing(command.to, conn.user_id, conn.username)


def handle_users(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    with rt.pool.autocommit() as cur:
        users = store.find_users(cur, command.query, command.limit, rt.config["NODE_TIMEOUT_SECONDS"])
    conn.send(protocol.users_frame(users))


def handle_rooms(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    """The public rooms (shared, at most a second old: runtime.public_rooms) and the user's private ones; with a
    `query`, those whose name holds it. With a `limit`, the busiest that many. In name order."""
    most = min(command.limit, rt.config["ROOMS_LIST_MAX"])
    if command.query:
        with rt.pool.autocommit() as cur:
            rooms = store.find_rooms(cur, conn.user_id, command.query, most)
    else:
        rooms = rt.public_rooms()
        listed = {room["name"] for room in rooms}
        unlisted = [room for room in conn.rooms if room not in listed]
        if unlisted:
            with rt.pool.autocommit() as cur:
                private = store.private_rooms_of(cur, conn.user_id, unlisted)
            rooms = sorted(rooms + private, key=lambda room: room["name"])
        if len(rooms) > most:
            busiest = sorted(rooms, key=lambda room: (-room["online"], room["name"]))[:most]
            rooms = sorted(busiest, key=lambda room: room["name"])
    conn.send(protocol.rooms_frame([{**room, "member": room["name"] in conn.rooms} for room in rooms]))


def handle_my_rooms(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    with rt.pool.autocommit() as cur:
        rooms = store.my_rooms(cur, conn.user_id, command.limit, command.offset)
        states = read_state.room_counts(cur, conn.user_id, conn.username, {r.room: r.last_read_id for r in rooms})
    items = [room_item(r.room, r.last_id, r.last_read_id, r.private, r.owner) for r in rooms]
    conn.send(protocol.my_rooms_frame(read_state.add_counts(items, states, "room")))


def handle_conversations(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    with rt.pool.autocommit() as cur:
        conversations = store.conversations_of(cur, conn.user_id, command.limit, command.offset)
        states = read_state.dm_counts(cur, conn.user_id, conn.username, [c["userId"] for c in conversations])
    conn.send(protocol.conversations_frame(read_state.add_counts(conversations, states, "userId")))


def handle_read(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    """Move the user's read marker forward.

    Every connection of theirs, anywhere, gets the read state as it stands after (the current
    one, for an id it had passed).
    """
    if command.to is not None:
        ensure_user_exists(rt, command.to)
    # Moved and counted with the other reads queued meanwhile (app/read_marks.py).
    state = rt.read_marks.mark(conn.user_id, conn.username, command.room, command.to, command.message_id)
    if state is None:
        refuse_non_member(rt, conn, command.room, f"join room '{command.room}' before marking it read")
    rt.publish_read(conn.user_id, command.room, command.to, state)


def handle_search(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    """Full-text search over the user's rooms and conversations, or the one asked for."""
    if command.to is not None:
        ensure_user_exists(rt, command.to)
    with rt.pool.autocommit() as cur:
        if command.room is not None and command.room not in conn.rooms:
            if not store.room_visible(cur, command.room, conn.user_id):
                raise room_not_found(command.room)
        found = search.search(cur, conn.user_id, command.query, command.room, command.to, command.before, command.limit)
    conn.send(protocol.search_frame(command.query, [m.data for m in found]))


def handle_create_room(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    rt.membership.create(conn, command.room, command.private, command.description)


def handle_invite(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    rt.membership.invite(conn, command.room, command.user_id)


def handle_remove(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    rt.membership.remove(conn, command.room, command.user_id)


PONG_FRAME = text_frame(protocol.PONG)

HANDLERS: dict[str, Handler] = {
    "auth": handle_auth,
    "ping": handle_ping,
    "join": handle_join,
    "leave": handle_leave,
    "message": handle_message,
    "dm": handle_dm,
    "room_history": handle_room_history,
    "dm_history": handle_dm_history,
    "typing": handle_typing,
    "rooms": handle_rooms,
    "my_rooms": handle_my_rooms,
    "conversations": handle_conversations,
    "users": handle_users,
    "read": handle_read,
    "search": handle_search,
    "edit": events.handle_event,
    "delete": events.handle_event,
    "react": events.handle_event,
    "unreact": events.handle_event,
    "create_room": handle_create_room,
    "invite": handle_invite,
    "remove": handle_remove,
}
