"""Who is online in each room, as this process knows it and has told its members.

The lists are read from PostgreSQL (presence.py writes them) at most once a second per
room and kept current in between by the presence events this process sends and hears.
A list stands for what the room's members here were told: their join_acks come from it,
and an event reaches them only when it changes it; reading a list again tells them how
the new one differs, which is how events lost with the bus are repaired.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import orjson

from .errors import ChatError
from .protocol import listed_user, listed_users
from .runners import run_soon
from .shared_read import SharedRead

# Rooms whose lists one process keeps at most; past it those of the rooms with no member
# here are forgotten (read again when asked), which bounds the memory of a process that saw
# many rooms come and go. A room with members here keeps its list: it is what they were told
# (so a process with members in more rooms than this keeps up to twice as many as have them).
MAX_ROOMS_KEPT = 10_000
# How long a leave that a read of a crowded room's list found, without telling it, stays
# news for the members here: its event is then on its way, late by its bus's delay
# (seconds while Redis catches up), or by a dead node's timeout and its burial's pace.
UNTOLD_LEAVE_MEMORY_SECONDS = 120.0


class News(NamedTuple):
    """Whom the members here are to tell of a presence event: everyone in the room, only
    `to_these` connections, or nobody (then it is false)."""

    to_everyone: bool
    # connections that had no list when the room's first list was read, for an event that
    # read held already (OnlineLists._read): it is news to them alone
    to_these: frozenset = frozenset()

    def __bool__(self) -> bool:
        return self.to_everyone or bool(self.to_these)


EVERYONE = News(True)
NOBODY = News(False)


def presence_event(room: str, event: str, user_id: int, username: str) -> dict:
    """A presence event ("join" or "leave") as the bus carries it, without its number."""
    return {"k": "p", "room": room, "event": event, "userId": user_id, "username": username}


class RoomOnline:
    """Who is online in one room (user id -> name, in the order they came), as last read.

    Presence events keep it current in constant time, however large the crowd; the
    join_ack list of its first users is encoded once and kept until one of them changes,
    so that a crowd joining a room is not listed and encoded once per join.
    """

    __slots__ = ("users", "_listed", "_listed_ids", "_gone_untold", "unlisted", "unlisted_until")

    def __init__(self, users: dict[int, str]) -> None:
        self.users = users
        # The connections here that were in the room when its first list was read, and have
        # had no join_ack from a list since, until time.monotonic() passes `unlisted_until`:
        # each was told every event heard until that read, and a late event of a change
        # the read already holds is still news to them (see OnlineLists._read).
        self.unlisted: set[Any] = set()
        self.unlisted_until = 0.0
        self._listed: tuple[int, bytes] | None = None  # (how many at most, the JSON)
        self._listed_ids: set[int] = set()
        # user id -> time.monotonic() when a read found them gone and told nobody here (see
        # `carry_untold`): their leave is still news
        self._gone_untold: dict[int, float] = {}

    def add(self, user_id: int, username: str) -> bool:
        """Add (or rename) a user; whether the list changed."""
        if self.users.get(user_id) == username:
            return False
        if self._listed and (user_id in self._listed_ids or len(self.users) < self._listed[0]):
            self._listed = None  # a listed name changed, or the newcomer is listed too
        self.users[user_id] = username
        self._gone_untold.pop(user_id, None)
        return True

    def remove(self, user_id: int) -> bool:
        """Remove a user; whether the list changed, or the members here were not told yet
        that the user left."""
        if self.users.pop(user_id, None) is None:
            return self._gone_untold.pop(user_id, None) is not None
        if user_id in self._listed_ids:
            self._listed = None  # the next one moves up into the list
        return True

    def apply(self, event: str, user_id: int, username: str) -> bool:
        """Apply a presence event ("join" or "leave"); whether the list changed."""
        if event == "join":
            return self.add(user_id, username)
        return self.remove(user_id)

    def carry_untold(self, replaced: RoomOnline, told_differences: bool) -> None:
        """Take over from the list this one replaces the users gone whose leave nobody here
        was told, with those it lists and this one does not, unless the difference was told.

        A read of a room too crowded for presence tells its members nothing: the leave
        of a user whose join they heard (from before the room grew crowded), committed
        before the read or hidden from it as a dead node's row, still comes as an event,
        which must not find the user already gone from the list.
        """
        now = time.monotonic()
        horizon = now - UNTOLD_LEAVE_MEMORY_SECONDS
        gone = {user_id: at for user_id, at in replaced._gone_untold.items() if at > horizon}
        if not told_differences:
            gone.update((user_id, now) for user_id in replaced.users if user_id not in gone)
        self._gone_untold = {user_id: at for user_id, at in gone.items() if user_id not in self.users}

    def listed(self, max_users: int) -> orjson.Fragment:
        """The JSON array of the first `max_users` users as join_ack lists them."""
        return orjson.Fragment(self._encoded(max_users))

    def listed_with(self, user_id: int, username: str, max_users: int) -> orjson.Fragment:
        """The JSON array `listed` gives once the user is added, leaving this list as it is.

        For a joiner's join_ack (OnlineLists.join_ack_list): a joiner missing from a list
        shorter than the limit goes at its end, after the array encoded once for everyone.
        A crowd resuming lists a hundred thousand joiners so; copying the list and encoding
        the copy cost 3.5 us a joiner in a room of ten, against 0.8.
        """
        if user_id in self.users or len(self.users) >= max_users:
            joined = RoomOnline(dict(self.users))
            joined.add(user_id, username)
            return joined.listed(max_users)
        entry = orjson.dumps(listed_user(user_id, username))
        encoded = self._encoded(max_users)
        if len(encoded) == 2:  # []
            return orjson.Fragment(b"[" + entry + b"]")
        return orjson.Fragment(b"".join((encoded[:-1], b",", entry, b"]")))

    def _encoded(self, max_users: int) -> bytes:
        """`listed`'s JSON, encoded once and kept until one of the users it lists changes."""
        if self._listed is None or self._listed[0] != max_users:
            entries = listed_users(self.users, max_users)
            self._listed_ids = {entry["userId"] for entry in entries}
            self._listed = (max_users, orjson.dumps(entries))
        return self._listed[1]


class OnlineLists:
    """The lists of the rooms this process has asked about, read and kept current."""

    def __init__(
        self,
        read_users: Callable[[str], dict[int, str]],
        tell: Callable[[dict], None],
        max_announced_room_size: int,
        max_age_seconds: float = 1.0,
        here: Callable[[int, str], bool] = lambda user_id, room: False,
        members_here: Callable[[str], Iterable[Any]] = lambda room: (),
    ) -> None:
        # room -> who is online there, cluster-wide (a query)
        self.read_users = read_users
        # (user id, room) -> whether a connection of the user here is joined to the room
        # (Hub.user_in_room)
        self.here = here
        # room -> the connections here registered in the room (Hub.members_by_room)
        self.members_here = members_here
        # delivers a presence event here, as the bus would (runtime.deliver_event)
        self.tell = tell
        # rooms with more users online than this hear no joins and leaves (presence.py)
        self.max_announced_room_size = max_announced_room_size
        # room -> its list: read at most this often per room, by one greenlet while the
        # others wait for it, so that a crowd joining does not read the crowd once per join
        self.max_age_seconds = max_age_seconds
        self.by_room: dict[str, SharedRead[RoomOnline]] = {}
        # room -> the presence events noted while its list is being read: the read may
        # come from a snapshot taken before they were committed, and replaces the list
        # they were noted in (see _read)
        self._noted_while_reading: dict[str, list[tuple[str, int, str]]] = {}
        # rooms whose presence events the bus may have lost here (see mark_unheard)
        self.unheard_rooms: set[str] = set()
        # lists left by the last sweep of those nobody here needs (see _forget_rooms_without_members)
        self._kept_after_sweep = 0

    def get(self, room: str) -> RoomOnline:
        """Who is online in the room, cluster-wide.

        Read at most once a second per room, by one greenlet while the others wait for it;
        presence events keep it current in between.
        """
        shared = self.by_room.get(room)
        if shared is None:
            if len(self.by_room) > max(MAX_ROOMS_KEPT, 2 * self._kept_after_sweep):
                self._forget_rooms_without_members()
            shared = self.by_room[room] = SharedRead(functools.partial(self._read, room), self.max_age_seconds)
        return shared.get()

    def prefetch(self, room: str) -> None:
        """Start reading the room's list, if `get` would read it, and return at once.

        A client resuming sends a join per room in one burst (Memberships.read_ahead): each
        join that found its list old would wait for a read of its own, and every wait
        writes out the frames answered so far, a send() each. Started together, the lists
        are read by one statement (OnlineListReads), and the burst is answered in one or
        two writes instead of one per room.
        """
        shared = self.by_room.get(room)
        if shared is None or shared.would_read():
            run_soon(self._read_quietly, room)

    def _read_quietly(self, room: str) -> None:
        try:
            self.get(room)
        except ChatError:
            pass  # the database is away: the join that needs the list finds out itself

    def now(self, room: str, read: RoomOnline) -> RoomOnline:
        """The room's list as it stands now, with every presence event noted so far.

        That is the newest list read (another greenlet may have read it again since `read` was),
        or `read`. No I/O: for answering a join, whose later events reach the joiner.
        """
        latest = self._latest(room)
        return latest if latest is not None else read

    def join_ack_list(
        self, room: str, read: RoomOnline, user_id: int, username: str, max_users: int
    ) -> tuple[orjson.Fragment, int]:
        """What a joiner's join_ack lists: the room's list as it stands now (see `now`), with
        them; the JSON of its first `max_users` users, and how many are online in all.

        The joiner's presence reaches the members here as an event (ours, noted already, or
        another node's, which may still be on its way) unless the room is too crowded for
        it: only then is the joiner added to the list they were told, as a read would. In a
        smaller room they are listed for the joiner alone (`RoomOnline.listed_with`), so
        that the event is still news here when it comes.
        """
        online = self.now(room, read)
        if online.users.get(user_id) != username:
            if len(online.users) < self.max_announced_room_size:
                count = len(online.users) + (user_id not in online.users)
                return online.listed_with(user_id, username, max_users), count
            online.add(user_id, username)
        return online.listed(max_users), len(online.users)

    def _forget_rooms_without_members(self) -> None:
        """Forget the lists of the rooms nobody here is in.

        A list is what the members here were told: forgotten, the next read would be a
        first read again, with no list to tell them the difference from.

        The next sweep waits until the lists kept have doubled: where most rooms have
        members here (a crowd in more rooms than MAX_ROOMS_KEPT), a sweep at every new
        room would walk every list for each one, and find nothing to forget.
        """
        for room in [room for room in self.by_room if not any(True for _ in self.members_here(room))]:
            del self.by_room[room]
        self._kept_after_sweep = len(self.by_room)

    def note(self, room: str, event: str, user_id: int, username: str) -> News:
        """Keep the room's list current with a presence event heard or sent, and say whom
        it is news to among the room's members here (what the list stands for).

        Nobody when it changes nothing (a join of someone listed already: a re-read or
        another node told it first). Only some connections when those had no list when the
        room's first list was read, for an event that read held already (see `_read`).
        """
        noted = self._noted_while_reading.get(room)
        if noted is not None:
            noted.append((event, user_id, username))
        cached = self._latest(room)
        if cached is None or cached.apply(event, user_id, username):
            return EVERYONE
        if cached.unlisted and time.monotonic() < cached.unlisted_until:
            return News(False, frozenset(cached.unlisted))
        return NOBODY

    def listed_to(self, room: str, connections: Iterable[Any]) -> None:
        """These connections got the room's list (a join_ack): only what changes it is news to them now."""
        cached = self._latest(room)
        if cached is not None and cached.unlisted:
            cached.unlisted.difference_update(connections)

    def mark_unheard(self, rooms: Iterable[str]) -> None:
        """The bus was away: presence events of these rooms may have been lost here."""
        self.unheard_rooms.update(rooms)

    def repair_unheard(self) -> None:
        """Read again the lists of the rooms marked unheard, telling their members the events they missed.

        See `_read`. A failure leaves the rest marked.
        """
        for room in sorted(self.unheard_rooms):
            shared = self.by_room.get(room)
            if shared is not None:
                shared.refresh()
            self.unheard_rooms.discard(room)

    def _latest(self, room: str) -> RoomOnline | None:
        shared = self.by_room.get(room)
        return shared.latest if shared is not None else None

    def _read(self, room: str) -> RoomOnline:
        """Read the list, apply the events noted meanwhile, and tell the members here what changed.

        Its snapshot may predate an event that was committed elsewhere and noted here
        while the query ran, in the list this read replaces: without them, the user
        would stay missing (or, for a leave, online) in every join_ack until the next
        read, and to the joiners for good. Events already in the snapshot apply again
        harmlessly, in the order they were committed.

        The list replaced is what the members here were told (join_acks from it, then
        every event that changed it): a difference is an event they missed (lost with
        the bus during an outage, see `mark_unheard`) or one still on its way (then
        not told twice: `note`).
        """
        noted = self._noted_while_reading.setdefault(room, [])
        try:
            online = RoomOnline(self.read_users(room))
        finally:
            self._noted_while_reading.pop(room, None)
        for event, user_id, username in noted:
            online.apply(event, user_id, username)
        told = self._latest(room)
        if told is None:
            # The first read. The members here were told every event heard so far (with no
            # list, each was news), but this snapshot may hold a change whose event has not
            # reached this process yet: committed elsewhere just before, on its way on the
            # bus. Heard after this read, it changes nothing in the list; to the members
            # here before the read it is still news, and they are told it (once: in_order
            # drops repeats), until they get a join_ack from a list or a bus's delay has
            # surely passed. Not to those who join later: their join_ack lists the change.
            online.unlisted = set(self.members_here(room))
            online.unlisted_until = time.monotonic() + UNTOLD_LEAVE_MEMORY_SECONDS
            return online
        if told.unlisted and time.monotonic() < told.unlisted_until:
            # (those still in the room: a closed connection is not kept alive by the set)
            online.unlisted = told.unlisted.intersection(self.members_here(room))
            online.unlisted_until = told.unlisted_until
        # Joined here but without a row: this process was buried by the others while
        # it could not beat, and its heartbeat has yet to write its users again. They
        # are online (the others are told so once that is done), not gone and back.
        for user_id, username in told.users.items():
            if user_id not in online.users and self.here(user_id, room):
                online.add(user_id, username)
        online.carry_untold(told, self._tell_differences(room, told, online))
        return online

    def _tell_differences(self, room: str, told: RoomOnline, online: RoomOnline) -> bool:
        """Deliver here, as presence events, what turns the list `told` into `online`;
        whether it did.

        Not in rooms too crowded for presence, where nobody was told anything.
        """
        if max(len(told.users), len(online.users)) > self.max_announced_room_size:
            return False
        before, after = told.users, online.users
        differences = [("leave", user_id, name) for user_id, name in before.items() if user_id not in after]
        differences += [("join", user_id, name) for user_id, name in after.items() if before.get(user_id) != name]
        for event, user_id, username in differences:
            # Without a number: the list read is newer than any event applied so far.
            self.tell(presence_event(room, event, user_id, username))
        return True
