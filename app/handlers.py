"""What each client command does: the routing table from frame type to action."""

from __future__ import annotations

import logging
from collections.abc import Callable

from . import events, protocol, store
from .connection import Connection
from .errors import NotFound, NotJoined, RateLimited, Unauthorized
from .messages import StoredMessage
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
    conn.token_expires_at = identity.refused_after
    conn.send(protocol.auth_ok_frame(conn.user_id, identity.expires_at))


def handle_ping(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    conn.send_frame(PONG_FRAME)


def handle_join(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    room = command.room
    with rt.presence.changing(room, conn.user_id):
        entered = rt.presence.enter(room, conn.user_id, conn.username, create_room=rt.config["ROOMS_AUTO_CREATE"])
        if entered is None:
            raise_not_entered(rt, room)
        if command.since is not None:
            conn.replay_buffers[room] = []  # live messages wait until the replay is sent
        rt.hub.join_room(conn, room, entered.state.last_seq, entered.state.last_id)
        conn.rooms.add(room)
    # Committed, and listed by the hub: from here on nothing may yield before join_ack, or
    # a live message could reach the joiner first. First the announcement (to the others
    # here: it puts the joiner in the room's list, which tells whether an event is news
    # to them; it does not yield). Then the list as it stands now, not as read before the
    # statement: events noted meanwhile did not reach the joiner, nor did they reach
    # `entered.online` if the list was read again. The joiner is in it even when not
    # announced (another tab of theirs, a crowded room).
    rt.presence.after_commit(entered.announced)
    online = rt.presence.online.now(room, entered.online)
    online.add(conn.user_id, conn.username)
    conn.send(protocol.join_ack_frame(room, online.listed(rt.config["JOIN_ACK_MAX_USERS"]), len(online.users)))
    if command.since is not None:
        # A `since` past the newest message (a database restored from an older backup, a
        # client's bug) means the newest: what comes after the join is all new to it.
        replay(rt, conn, room, min(command.since, entered.state.last_id))


def raise_not_entered(rt: ChatRuntime, room: str) -> None:
    """Why a join found no room: it does not exist (or is private), or, where joining
    creates rooms, the user has created as many as they may for now."""
    if rt.config["ROOMS_AUTO_CREATE"]:
        with rt.pool.autocommit() as cur:
            if not store.room_named(cur, room):
                limit = rt.config["ROOMS_CREATE_PER_MINUTE"]
                raise RateLimited(f"too many rooms created: at most {limit} a minute; join an existing one or wait")
    raise NotFound(f"room '{room}' does not exist")


def replay(rt: ChatRuntime, conn: Connection, room: str, since: int) -> None:
    """Send every message and event of the room after `since`, then what arrived live meanwhile.

    The connection was registered before the first query, so each message is either in
    the database snapshot or in the live stream (or both: sent once, by id). The live
    stream of this process may lag behind what the replay read from the database (a
    message still on its way through the bus), so what it brings up to the last replayed
    id is dropped (Connection.replayed_up_to).
    """
    last_sent = since
    page_size = rt.config["REPLAY_PAGE_SIZE"]
    try:
        while True:
            with rt.pool.autocommit() as cur:
                page = events.channel_after(cur, ("r", room), last_sent, None, page_size)
            for message in page:
                conn.send_frame(message.wire_frame)
                last_sent = message.id
            if len(page) < page_size:
                break
            conn.wait_until_drained()
            if room not in conn.replay_buffers:
                return  # left meanwhile
            if conn.peer_gone or conn.close_code is not None:
                return  # gone (or going): the rest would be read for nobody
    except Exception:
        # A replay with a hole would let the client skip messages for good: undo the
        # join instead, so that it joins again with the same `since`. (Kept joined, the
        # connection would also hold the room's live messages back for good.)
        conn.end_replay(room)
        leave_room(rt, conn, room)
        raise
    conn.replayed_up_to[room] = last_sent
    for message in conn.end_replay(room):
        conn.room_message(message)


def handle_leave(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    if command.room not in conn.rooms:
        raise NotJoined(f"not joined to room '{command.room}'")
    leave_room(rt, conn, command.room)
    conn.send(protocol.left_frame(command.room))


def leave_room(rt: ChatRuntime, conn: Connection, room: str) -> None:
    conn.rooms.discard(room)
    conn.end_replay(room)
    conn.replayed_up_to.pop(room, None)
    rt.hub.leave_room(conn, room)
    with rt.presence.changing(room, conn.user_id):
        if not rt.hub.user_in_room(conn.user_id, room):
            rt.presence.leave(room, conn.user_id, conn.username)


def handle_message(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    if command.room not in conn.rooms:
        raise NotJoined(f"join room '{command.room}' before sending to it")
    draft = store.Draft(conn.user_id, conn.username, command.content, room=command.room, client_id=command.client_id)
    outcome = rt.batcher.submit(draft, conn)
    if outcome.duplicate:
        answer_resend(conn, outcome.message)


def handle_dm(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    ensure_user_exists(rt, command.to)
    draft = store.Draft(conn.user_id, conn.username, command.content, to_user=command.to, client_id=command.client_id)
    outcome = rt.batcher.submit(draft, conn)
    if outcome.duplicate:
        answer_resend(conn, outcome.message)


def answer_resend(conn: Connection, stored: StoredMessage) -> None:
    """A clientId sent again: answer with the message stored under it, as if it had just
    been sent (PROTOCOL.md §2), in the frame of its own kind whatever the resend was."""
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
        if command.room not in conn.rooms and not store.room_exists(cur, command.room):
            raise NotFound(f"room '{command.room}' does not exist")
        messages = store.room_history(cur, command.room, command.limit, command.before, command.after)
    conn.send(protocol.room_history_frame(command, [m.data for m in messages]))


def handle_dm_history(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    ensure_user_exists(rt, command.to)
    with rt.pool.autocommit() as cur:
        messages = store.dm_history(cur, conn.user_id, command.to, command.limit, command.before, command.after)
    conn.send(protocol.dm_history_frame(command, [m.data for m in messages]))


def handle_typing(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    if command.to is not None:
        handle_dm_typing(rt, conn, command)
        return
    if command.room not in conn.rooms:
        raise NotJoined(f"not joined to room '{command.room}'")
    rt.publish_typing(command.room, conn.user_id, conn.username)


def handle_dm_typing(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    """To every connection of the recipient; typing to oneself tells nobody (the sender's
    own connections never get their typing) and is not an error: a DM to oneself is allowed."""
    ensure_user_exists(rt, command.to)
    if command.to != conn.user_id:
        rt.publish_dm_typing(command.to, conn.user_id, conn.username)


def handle_users(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    with rt.pool.autocommit() as cur:
        users = store.find_users(cur, command.query, command.limit, rt.config["NODE_TIMEOUT_SECONDS"])
    conn.send(protocol.users_frame(users))


def handle_rooms(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    conn.send_frame(rt.rooms_frame.get())


def handle_conversations(rt: ChatRuntime, conn: Connection, command: Command) -> None:
    with rt.pool.autocommit() as cur:
        conversations = store.conversations_of(cur, conn.user_id, command.limit, command.offset)
    conn.send(protocol.conversations_frame(conversations))


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
    "conversations": handle_conversations,
    "users": handle_users,
    "edit": events.handle_event,
    "delete": events.handle_event,
    "react": events.handle_event,
    "unreact": events.handle_event,
}
