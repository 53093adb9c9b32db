"""Stored membership on the live path: which connections of this process receive a room.

Membership belongs to the user and is stored (chat_members, changed in one transaction
with presence by app/presence.py). Every connection of a member is registered in the hub
for the room from its `welcome` on: the user's memberships are read once when it connects,
and changed by `join` and `leave` here, by the bus's `member` events from other nodes, and
by the heartbeat's check against the database (what the bus lost). Nothing here runs per
message: `message` looks at `Connection.rooms` only.

Private rooms (PROTOCOL.md §8) are made with `create_room`, whose creator owns them; any
member may `invite` a user, the owner may `remove` one. An invitation or a removal reaches
the user's connections on other nodes as a `member` event carrying what they are told.

`Connection.rooms` maps each room to the connection's *floor*: every message of the room
with an id above it has been sent to the connection or will be, live. A `join` with
`since` replays what lies between `since` and the floor, so that nothing is missed or sent
twice on that connection, counting what came live since `welcome`.

A membership begins at the room's last id when its statement ran (`after` in the bus's
`member` event). Every later message is the member's, but a connection is listed in the
room here only once the membership is known here, a round trip later, or, on another
node, once its event has come: a message sent meanwhile (the legacy client's first one
to a room, which joins it) can be released here first, to nobody of theirs. Such a
connection is caught up: after its join_ack, what lies between the beginning and its
floor is replayed to it from the database, its live messages held back meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

from gevent.event import AsyncResult, Event

from . import events, protocol, store
from .connection import Connection
from .db import Pool
from .errors import ChatError, Forbidden, Invalid, NotFound, NotJoined, RateLimited
from .full_check import FullCheck
from .hub import Hub
from .messages import StoredMessage
from .noyield import not_yielding
from .presence import Entered, Presence
from .resume_reads import ResumeReads
from .runners import run_soon

log = logging.getLogger(__name__)

# Rooms and conversations listed in `welcome` at most (PROTOCOL.md §1); the rest come with
# `my_rooms` and `conversations`.
WELCOME_LIST_MAX = 200
# Joins whose resume reads one burst reads ahead at most (a client resuming sends one per
# room: the rate limit's burst, 30 frames, bounds it too).
READ_AHEAD_MAX = 64


class Joined(NamedTuple):
    """What a join leaves to replay to its connection: the messages with an id above
    `since` (None: no replay) and, when given, at most `up_to`; `page`, when given, is
    the replay's first page, read already."""

    since: int | None
    up_to: int | None
    page: Sequence[StoredMessage] | None = None


class Memberships:
    """This process's side of membership: registering connections, telling them."""

    def __init__(
        self,
        hub: Hub,
        presence: Presence,
        pool: Pool,
        join_ack_max_users: int,
        rooms_per_minute: int = 0,
        replay_page_size: int = 500,
    ) -> None:
        self.hub = hub
        self.presence = presence
        self.pool = pool
        self.resume_reads = ResumeReads(pool, replay_page_size, hub.room_last_event)
        self.replay_page_size = replay_page_size
        # (connection, room) -> set when that connection's catch-up (see module doc) ends:
        # a join of the room on that connection waits for it
        self._catching_up: dict[tuple[Connection, str], Event] = {}
        # whether the heartbeat's reconcile is due (it reads every membership of the users here)
        self.full_check = FullCheck(pool)
        self.join_ack_max_users = join_ack_max_users
        # Rooms a user may create a minute (0: no limit): create_room counts with join.
        self.rooms_per_minute = rooms_per_minute

    # --- a connection's life ------------------------------------------------------------------

    def connected(self, conn: Connection, rooms: list[store.MemberRoom]) -> list[dict]:
        """Register a new connection for its user's rooms (read just before, nothing
        yielding since); the `welcome` items of the rooms (welcome_room_items)."""
        firsts = []
        floors = {}
        for member in rooms:
            if not self.hub.user_in_room(conn.user_id, member.room):
                firsts.append((member.room, conn.user_id, conn.username))
            floors[member.room] = self._register(conn, member.room, member.last_seq, member.last_id)
        # The user's first connection here in these rooms: this node's presence rows.
        self.presence.tend_soon(firsts)
        return welcome_room_items(rooms, floors)

    def disconnected(self, conn: Connection) -> None:
        """Unregister a closing connection; its user's last one here leaves this node's
        presence rows to remove (membership stays)."""
        lasts = []
        for room in list(conn.rooms):
            self._unregister(conn, room)
            if not self.hub.user_in_room(conn.user_id, room):
                lasts.append((room, conn.user_id, conn.username))
        self.presence.tend_soon(lasts)

    # --- join and leave -------------------------------------------------------------------------

    def join(self, conn: Connection, room: str, since: int | None, create_room: bool) -> Joined | None:
        """Make the user a member (if not yet) and register every connection of theirs
        here; the join_ack goes to `conn` and to those newly registered. Returns what
        to replay to `conn`, or None when the room is not found.

        With `since`, the room's live messages wait in `conn.replay_buffers` from before
        the registration; the caller replays, then sends them on.
        """
        user_id = conn.user_id
        catching_up = self._catching_up.get((conn, room))
        if catching_up is not None:
            catching_up.wait()  # its replay and this join's would interleave
        if self._receives(conn, room):
            joined = self._rejoin(conn, room, since)
            if joined is not None:
                return joined
        with self.presence.changing(room, user_id):
            entered = self.presence.join(room, user_id, conn.username, create_room)
            if entered is None:
                return None
            state = entered.state
            known = room in conn.rooms
            if since is not None:
                conn.replay_buffers[room] = []  # live messages wait until the replay is sent
            newly = [c for c in self.hub.connections_by_user.get(user_id, ()) if room not in c.rooms]
            for other in newly:
                self._register(other, room, state.last_seq, state.last_id)
            # (this connection's own catch-up, if it needs one, is its replay below)
            behind = self._hold_for_catch_up([c for c in newly if c is not conn or since is None], room, state.last_id)
        # Committed, and listed by the hub: the join_acks must go out before any live
        # message. First the announcement (to the others here: it puts the joiner in the
        # room's list, which tells whether an event is news to them). Then the list as it
        # stands now, not as read before the statement: events noted meanwhile did not
        # reach the joiner, nor did they reach `entered.online` if the list was read
        # again. The joiner is in it even when not announced (another tab, a crowd).
        with not_yielding("a join's listing and its join_acks"):
            self.presence.after_commit(entered.announced)
            ack = self._join_ack(room, entered, conn.user_id, conn.username)
            conn.send(ack)
            for other in newly:
                if other is not conn:
                    other.send(ack)
            self.presence.online.listed_to(room, [conn, *newly])
        self._catch_up([other for other in behind if other is not conn], room, state.last_id)
        if since is None:
            if conn in behind:
                return Joined(state.last_id, conn.rooms[room])
            return Joined(None, None)
        # A `since` past the newest message (a database restored from an older backup, a
        # client's bug) means the newest: what comes after the join is all new to it.
        since = min(since, state.last_id)
        # Registered before: everything above the floor came (or comes) live, so the
        # replay ends there. Registered now: it reads up to the newest message, and live
        # messages up to what it read are dropped (Connection.replayed_up_to).
        return Joined(since, conn.rooms[room] if known else None)

    def _rejoin(self, conn: Connection, room: str, since: int | None) -> Joined | None:
        """A join of a room the connection receives already (from its `welcome` on, say):
        answered from what this process knows, with a read and no write.

        The user is a member (the connection is registered for the room only while they
        are: a membership ended elsewhere unregisters it when its event comes), and the
        presence row is there or on its way (written at the connection's first here). A
        client resuming after a restart sends one such join per room: storing nothing
        spares a commit, a WAL flush, each. None when the connection stopped receiving the
        room while we read (a leave, a removal): then it joins as a new one does.
        """
        key = self._resume_read(conn, room, since)
        _, read_from, floor = key
        if since is not None:
            since = read_from  # a `since` past the newest message means the newest
        gate = self.hub.gates.get(("r", room))
        last_id = max(floor, gate.last_id if gate is not None else 0)
        # Registered before: everything above the floor came (or comes) live, so the
        # replay ends there, and its first page is read with the member count.
        ahead = None
        if conn.reads_ahead:
            ahead = conn.reads_ahead.pop(key, None)
            if not conn.reads_ahead:
                conn.reads_ahead = None  # an idle connection keeps no empty dict
        resumed = ahead.get() if ahead is not None else self.resume_reads.read(*key)
        online = self.presence.online.get(room)
        if conn.rooms.get(room) != floor or not self._all_registered(conn.user_id, room):
            return None
        members = resumed.members
        page: Sequence[StoredMessage] | None = resumed.page
        with not_yielding("a rejoin's join_ack"):
            if since is not None:
                conn.replay_buffers[room] = []  # live messages wait until the replay is sent
                if page and resumed.read_after_event != self.hub.room_last_event(room):
                    # An edit, delete or reaction released since the page was read may
                    # have reached the connection already: the replay reads afresh,
                    # after it, as what is released from now on waits behind the replay.
                    page = None
            listed, online_count = self.presence.online.join_ack_list(
                room, online, conn.user_id, conn.username, self.join_ack_max_users
            )
            ack = protocol.join_ack_frame(room, listed, online_count, members, last_id, resumed.owner)
            conn.send(ack)
        self.presence.online.listed_to(room, [conn])
        if since is None:
            return Joined(None, None)
        return Joined(since, floor, page)

    def _resume_read(self, conn: Connection, room: str, since: int | None) -> tuple[str, int, int]:
        """What a join of a room the connection receives reads: (room, since, floor).

        A `since` past the newest message means the newest (see `join`); without one, the
        read is of the member count alone (nothing lies between the floor and itself).
        """
        floor = conn.rooms[room]
        if since is None:
            return room, floor, floor
        gate = self.hub.gates.get(("r", room))
        return room, min(since, max(floor, gate.last_id if gate is not None else 0)), floor

    def read_ahead(
        self, conn: Connection, room: str, since: int | None, queued: Callable[[], list[tuple[str, int | None]]]
    ) -> None:
        """Queue at once the resume reads of a join being handled and of those the client has
        sent after it (`queued()`: their (room, since), in order).

        A client resuming sends a join per room in one burst, and each waits for its read
        before the next is handled: read one after another, a burst of 20 would wait for 20
        batches of ResumeReads. Read ahead, they share one, and each join, handled in its
        turn, takes its read from conn.reads_ahead; the rooms' online lists, which their
        join_acks give, are started the same way (OnlineLists.prefetch). Only joins of rooms
        the connection receives (those `_rejoin` answers) are read; a read that no join comes
        to take (the join was refused, the room left meanwhile) is dropped with the next
        burst's.
        """
        if not self._receives(conn, room):
            return  # a join that writes (Presence.join): not a resuming one
        if conn.reads_ahead and self._resume_read(conn, room, since) in conn.reads_ahead:
            return  # read ahead with an earlier join of its burst
        ahead: dict[tuple[str, int, int], AsyncResult] = {}
        for joined, joined_since in [(room, since), *queued()][:READ_AHEAD_MAX]:
            if self._receives(conn, joined):
                key = self._resume_read(conn, joined, joined_since)
                if key not in ahead:
                    ahead[key] = self.resume_reads.submit(key)
                    self.presence.online.prefetch(joined)  # each rejoin's join_ack lists it
        conn.reads_ahead = ahead

    def _receives(self, conn: Connection, room: str) -> bool:
        """Whether the connection, and every other of its user here, receives the room."""
        return room in conn.rooms and self._all_registered(conn.user_id, room)

    def _all_registered(self, user_id: int, room: str) -> bool:
        """Whether every connection of the user here receives the room."""
        # (a loop, not all() over a generator: asked several times a join, four hundred
        # thousand times in a storm of 5,000)
        for other in self.hub.connections_by_user.get(user_id, ()):
            if room not in other.rooms:
                return False
        return True

    def leave(self, conn: Connection, room: str) -> None:
        """End the user's membership: every connection of theirs here leaves the room and
        gets `left` (those on other nodes hear it on the bus)."""
        user_id = conn.user_id
        with self.presence.changing(room, user_id):
            self.presence.end_membership(room, user_id, conn.username)
            self._drop(room, user_id)

    # --- private rooms and invitations (PROTOCOL.md §8) ------------------------------------------

    def create(self, conn: Connection, room: str, private: bool, description: str) -> None:
        """Create the room with the user as its owner and first member; every connection of
        theirs gets join_ack (those on other nodes by the `member` event)."""
        with self.pool.transaction() as cur:
            created, taken = store.create_owned_room(
                cur, room, conn.user_id, private, description, self.rooms_per_minute
            )
        if not created:
            if taken:
                raise Invalid(f"room '{room}' exists already: choose another name")
            raise RateLimited(f"too many rooms created: at most {self.rooms_per_minute} a minute; wait")
        # A new room: every message of it comes after the membership began.
        self.presence.publish_member({"k": "member", "room": room, "userId": conn.user_id, "after": 0})
        self.apply(room, conn.user_id, after=0)

    def invite(self, conn: Connection, room: str, user_id: int) -> None:
        """Make the user a member of the room, `conn`'s user being one; their connections get
        `invited` and join_ack, the members `presence` if they are online. Inviting a
        member changes nothing and tells nothing."""
        with self.pool.autocommit() as cur:
            access = store.room_access(cur, room, conn.user_id)
            if access is None:
                raise room_not_found(room)
            if access.role is None:
                raise NotJoined(f"join room '{room}' before inviting to it")
            if not store.user_exists(cur, user_id):
                raise NotFound(f"user {user_id} does not exist")
        invited = protocol.invited_frame(room, access.private, access.description, conn.user_id, conn.username)
        event = {"k": "member", "room": room, "userId": user_id, "invited": invited}
        after = self.presence.invite(room, user_id, conn.user_id, event)
        if after is not None:
            self.apply(room, user_id, invited=invited, after=after)

    def remove(self, conn: Connection, room: str, user_id: int) -> None:
        """End the user's membership, `conn`'s user owning the room; their connections get
        `left` with the reason "removed" and nothing of the room after it."""
        with self.pool.autocommit() as cur:
            access = store.room_access(cur, room, conn.user_id)
            if access is None:
                raise room_not_found(room)
            if access.role != "owner":
                raise Forbidden(f"only the owner of room '{room}' may remove its members")
            if user_id == conn.user_id:
                raise Forbidden("the owner cannot remove themself: leave the room instead")
            username = store.member_name(cur, room, user_id)
            if username is None:
                raise NotFound(f"user {user_id} does not exist")
            if not store.is_member(cur, room, user_id):
                raise NotFound(f"user {user_id} is not a member of room '{room}'")
        event = {"k": "member", "room": room, "userId": user_id, "removed": True}
        with self.presence.changing(room, user_id):
            if not self.presence.remove(room, user_id, username, conn.user_id, event):
                raise NotFound(f"user {user_id} is not a member of room '{room}'")  # gone meanwhile
            self._drop(room, user_id, "removed")

    def ended_elsewhere(self, room: str, user_id: int, reason: str | None) -> None:
        """A leave or a removal (`reason` "removed") committed on another node: the user's
        connections here stop receiving the room at once, before anything the bus brings
        after it (on PostgreSQL, the order of the commits); `apply` then settles on what is
        stored."""
        self._drop(room, user_id, reason)

    def unregister(self, conn: Connection, room: str) -> None:
        """One connection stops receiving a room (a replay that failed: the client joins
        again with the same `since`), its membership staying."""
        with self.presence.changing(room, conn.user_id):
            self._unregister(conn, room)
        if not self.hub.user_in_room(conn.user_id, room):
            self.presence.tend_soon([(room, conn.user_id, conn.username)])

    # --- what happened elsewhere ----------------------------------------------------------------

    def apply(
        self, room: str, user_id: int, invited: dict | None = None, removed: bool = False, after: int | None = None
    ) -> None:
        """Make this process's connections of the user follow their membership of the room
        as stored now: registered with a join_ack (after `invited`, when they were), or
        unregistered with `left` (with the reason "removed", when they were).

        For a `member` event from another node, and for a difference the heartbeat found.
        The membership is read again under the (room, user) lock rather than taken from the
        event, so events heard out of order, or twice, end in the stored state. `after`,
        when known: the room's last id when the membership began; the connections
        registered now are caught up from it (see the module doc).
        """
        connections = self.hub.connections_by_user.get(user_id)
        if not connections:
            return
        username = next(iter(connections)).username
        with self.presence.changing(room, user_id):
            entered = self.presence.enter(room, user_id, username)
            connections = list(self.hub.connections_by_user.get(user_id, ()))
            if entered is None:
                gone = [conn for conn in connections if room in conn.rooms]
                for conn in gone:
                    self._unregister(conn, room)
                    conn.send(protocol.left_frame(room, "removed" if removed else None))
                if gone:
                    self.presence.leave(room, user_id, username)
                return
            newly = [conn for conn in connections if room not in conn.rooms]
            for conn in newly:
                self._register(conn, room, entered.state.last_seq, entered.state.last_id)
            behind = self._hold_for_catch_up(newly, room, after)
        self.presence.after_commit(entered.announced)
        if newly:
            ack = self._join_ack(room, entered, user_id, username)
            for conn in newly:
                if invited is not None:
                    conn.send(invited)
                conn.send(ack)
            self.presence.online.listed_to(room, newly)
        self._catch_up(behind, room, after)

    def reconcile(self) -> None:
        """Compare the memberships of the users connected here with the database and
        apply each difference (a `member` event the bus lost, a join whose answer was lost
        after its commit), when one may have happened or once a minute anyway
        (app/full_check.py; the runtime marks a check due when the bus reconnects). One
        query; more only for differences.

        A membership found gone is told as a removal if it was one: the owner's node may
        not have published its event yet, and the user's tabs must not read a plain leave.
        """
        self.full_check.run_if_due(self._reconcile)

    def _reconcile(self) -> None:
        users = list(self.hub.connections_by_user)
        if not users:
            return
        with self.pool.autocommit() as cur:
            stored = store.members_of(cur, users)
        by_user: dict[int, set[str]] = {}
        for room, user_id in stored:
            by_user.setdefault(user_id, set()).add(room)
        differences: set[tuple[str, int]] = set()
        for user_id in users:
            rooms = by_user.get(user_id, set())
            for conn in tuple(self.hub.connections_by_user.get(user_id, ())):
                differences.update((room, user_id) for room in rooms.symmetric_difference(conn.rooms))
        if not differences:
            return
        removals: set[tuple[str, int]] = set()
        if ended := [pair for pair in differences if pair not in stored]:
            with self.pool.autocommit() as cur:
                removals = store.removed_among(cur, ended)
        for room, user_id in sorted(differences):
            self.apply(room, user_id, removed=(room, user_id) in removals)

    # --- replays --------------------------------------------------------------------------------

    def replay(
        self,
        conn: Connection,
        room: str,
        since: int,
        up_to: int | None = None,
        first_page: Sequence[StoredMessage] | None = None,
    ) -> None:
        """Send every message and event of the room after `since`, then what arrived live meanwhile.

        The connection was registered before the first query, with its live messages held
        (Connection.replay_buffers), so each message is either in the database snapshot or
        in the live stream (or both: sent once, by id). The live stream of this process may
        lag behind what the replay read from the database (a message still on its way
        through the bus), so what it brings up to the last replayed id is dropped
        (Connection.replayed_up_to). With `up_to` (the connection's floor), everything above
        it came or comes live, and the replay stops there. `first_page`: the first page,
        read already (app/resume_reads.py).
        """
        last_sent = since
        try:
            while True:
                if first_page is not None:
                    page, first_page = first_page, None
                else:
                    with self.pool.autocommit() as cur:
                        page = events.channel_after(
                            cur, ("r", room), last_sent, None, self.replay_page_size, up_to_id=up_to
                        )
                for message in page:
                    conn.send_frame(message.wire_frame)
                    last_sent = message.id
                if len(page) < self.replay_page_size:
                    break
                conn.wait_until_drained()
                if room not in conn.replay_buffers:
                    return  # left meanwhile
                if conn.peer_gone or conn.close_code is not None:
                    return  # gone (or going): the rest would be read for nobody
        except Exception:
            # A replay with a hole would let the client skip messages for good: this
            # connection stops receiving the room instead (the membership stays), so that
            # it joins again with the same `since`. (Kept listed, the connection would also
            # hold the room's live messages back for good.)
            self.unregister(conn, room)
            raise
        if room in conn.rooms:
            # Everything above `since` has now been sent, or comes live.
            conn.rooms[room] = since if up_to is None else min(conn.rooms[room], since)
        if up_to is None:
            conn.replayed_up_to[room] = last_sent
        for message in conn.end_replay(room):
            conn.room_message(message)

    def _hold_for_catch_up(self, connections: list[Connection], room: str, began: int | None) -> list[Connection]:
        """Those of these connections, just registered, that need a catch-up (see the
        module doc): whose floor is above `began`, the room's last id when the membership
        began (None: not known). Their live messages wait from now until it is sent."""
        if began is None:
            return []
        behind = [conn for conn in connections if conn.rooms[room] > began]
        for conn in behind:
            conn.replay_buffers[room] = []
        return behind

    def _catch_up(self, connections: list[Connection], room: str, began: int | None) -> None:
        """Replay to each connection, after its join_ack, the room's messages above `began`
        up to its floor, in a greenlet of its own; a join of the room on it waits for that."""
        for conn in connections:
            key = (conn, room)
            done = self._catching_up[key] = Event()
            run_soon(self._catch_up_one, conn, room, began, conn.rooms[room], key, done)

    def _catch_up_one(
        self, conn: Connection, room: str, began: int, floor: int, key: tuple[Connection, str], done: Event
    ) -> None:
        try:
            if room in conn.replay_buffers:  # else it left (or closed) meanwhile
                self.replay(conn, room, began, up_to=floor)
        except ChatError:
            # The connection stopped receiving the room (the replay's rule). No request of
            # its client waits to be told: the next membership check lists it again.
            self.full_check.mark()
        except Exception:
            log.exception("catching %r up with room %s failed", conn, room)
            self.full_check.mark()
        finally:
            if self._catching_up.get(key) is done:
                del self._catching_up[key]
            done.set()

    # --- helpers --------------------------------------------------------------------------------

    def _register(self, conn: Connection, room: str, last_seq: int, last_id: int) -> int:
        """List a connection in the room's members here; its floor (see module doc)."""
        floor = self.hub.join_room(conn, room, last_seq, last_id)
        conn.rooms[room] = floor
        return floor

    def _drop(self, room: str, user_id: int, reason: str | None = None) -> None:
        """Every connection of the user here stops receiving the room, and gets `left`."""
        for conn in list(self.hub.connections_by_user.get(user_id, ())):
            if room in conn.rooms:
                self._unregister(conn, room)
                conn.send(protocol.left_frame(room, reason))

    def _unregister(self, conn: Connection, room: str) -> None:
        conn.rooms.pop(room, None)
        conn.end_replay(room)
        conn.replayed_up_to.pop(room, None)
        self.hub.leave_room(conn, room)

    def _join_ack(self, room: str, entered: Entered, user_id: int, username: str) -> dict:
        listed, online_count = self.presence.online.join_ack_list(
            room, entered.online, user_id, username, self.join_ack_max_users
        )
        gate = self.hub.gates.get(("r", room))
        last_id = max(entered.state.last_id, gate.last_id if gate is not None else 0)
        return protocol.join_ack_frame(room, listed, online_count, entered.members, last_id, entered.owner)


def latest_rooms(rooms: list[store.MemberRoom]) -> list[store.MemberRoom]:
    """The rooms a `welcome` lists: the latest active first by what was read, at most
    WELCOME_LIST_MAX (welcome_reads counts the unread of these)."""
    return sorted(rooms, key=lambda r: (-r.last_id, r.room))[:WELCOME_LIST_MAX]


def welcome_room_items(rooms: list[store.MemberRoom], floors: dict[str, int]) -> list[dict]:
    """The `welcome` items of a user's rooms, with the connection's floor in each.

    The rooms are chosen by what was read (latest_rooms), not by the floors: a message
    that came between the read and the listing raises a room's floor, and a room chosen by
    it could be one whose unread was not counted. Their order is the floors', the latest
    first.
    """
    listed = latest_rooms(rooms)
    items = [room_item(m.room, max(m.last_id, floors[m.room]), m.last_read_id, m.private, m.owner) for m in listed]
    items.sort(key=lambda item: (-item["lastId"], item["room"]))
    return items


def room_item(room: str, last_id: int, last_read_id: int, private: bool = False, owner: bool = False) -> dict:
    """A room of `welcome` and `my_rooms`; its unread and mention counts are set by
    read_state.add_counts. `role` ("owner": the user may `remove`) is an addition to PROTOCOL.md."""
    return {
        "room": room,
        "private": private,
        "role": "owner" if owner else "member",
        "lastId": last_id,
        "lastReadId": last_read_id,
        "unread": 0,
        "mentions": 0,
    }


def room_not_found(room: str) -> NotFound:
    """The one answer for a room that does not exist and for a private room the user is not
    a member of: the same code and text, so that the two are never told apart."""
    return NotFound(f"room '{room}' does not exist")


def conversation_items(partners: list[dict]) -> list[dict]:
    """The `welcome` items of the user's conversations (store.conversations_of, the latest
    first); their read state is set by read_state.add_counts."""
    return [{**partner, "lastReadId": 0, "unread": 0, "mentions": 0} for partner in partners]
