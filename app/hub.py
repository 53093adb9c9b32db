"""The process-local side of delivery: who is connected here, and per-channel ordering.

Messages reach this process from two directions: right after our own commits (the fast
path) and from the bus (other processes' commits). Neither path alone keeps room order, and
pub/sub may lose messages, so every room and conversation with a member here has a `Gate`
that releases messages strictly in their channel sequence: duplicates are dropped, early
ones wait, and a gap that does not close by itself is filled from the database.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import gevent
from gevent.lock import Semaphore

from . import protocol
from .commits_in_flight import CommitsInFlight
from .errors import ChatError
from .messages import ChannelKey, StoredEvent, StoredMessage
from .metrics import GAP_FILL_DEFERRALS, GAP_FILLS
from .wsframe import text_frame

if TYPE_CHECKING:
    from .connection import Connection

log = logging.getLogger(__name__)

# Rows fetched per query while filling a gap or catching up after a bus outage.
FILL_PAGE_SIZE = 500
# Gap fills querying the database at once, per process.
FILLS_AT_ONCE = 2
# How long a fill that read rows of a conversation waits for this process's commits to
# it that were under way, so that their sending connections get their DMs as dm_sent
# (see CommitsInFlight). A delivery follows its commit within milliseconds; a lane stuck
# on a lost connection must not hold the conversation's other messages for longer (the
# sending tab then gets its DM as `dm`, and `dm_sent` when the delivery comes).
LOCAL_COMMIT_WAIT_SECONDS = 2.0

# fetch(channel, after_id, from_seq, up_to_seq or None, limit) -> messages in id order,
# those after `after_id`; when that is None (not looked up yet), those after the channel's
# last message numbered below `from_seq`
Fetcher = Callable[[ChannelKey, "int | None", int, "int | None", int], list[StoredMessage]]
# () -> a moment before which every bus payload that reached this process was handled, or
# None when unknown (Bus.handled_until)
BusProgress = Callable[[], "float | None"]


@dataclass
class Gate:
    """Where one channel's stream stands in this process."""

    next_seq: int  # the sequence number to release next
    # id of the last message released (or older): the fill query's lower bound. None: not
    # looked up (a conversation listed at connect), the fill query finds it: listing the
    # ids of all of a user's conversations at connect costs much, and few ever need one.
    last_id: int | None
    pending: dict[int, StoredMessage] = field(default_factory=dict)  # early arrivals by seq
    filling: bool = False
    # a head the running fill is to reach as well (see _schedule_fill)
    fill_up_to: int | None = None
    # next_seq when the periodic check last found the channel behind its head: a gap that
    # is still there at the next check was lost by the bus (not merely in flight)
    behind_at: int | None = None
    # the number (Hub.event_numbers) of the last edit, delete or reaction released: a
    # page of the channel read before it may show a message as it stood before it
    last_event: int = 0


class Hub:
    """Local membership tables, channel gates and fan-out for one server process."""

    def __init__(self, fetch: Fetcher, gap_wait_seconds: float, bus_handled_until: BusProgress = lambda: None) -> None:
        self.fetch = fetch
        self.gap_wait_seconds = gap_wait_seconds
        self.bus_handled_until = bus_handled_until
        # Fills fetching at once. A process that falls behind finds gaps in nearly every
        # room; one query for each at once would put it further behind.
        self._fetching = Semaphore(FILLS_AT_ONCE)
        # room name -> connections of this process of the room's members (a dict keeps
        # the order they came in)
        self.members_by_room: dict[str, dict[Connection, None]] = {}
        # user id -> that user's authenticated connections in this process
        self.connections_by_user: dict[int, set[Connection]] = {}
        # channel -> its gate, for every room and conversation with a member here
        self.gates: dict[ChannelKey, Gate] = {}
        # user id -> the conversations of that connected user with a gate here (so that
        # a user's last disconnect drops them without looking at every gate of the process)
        self.conversations_by_user: dict[int, set[ChannelKey]] = {}
        # user id -> connection being registered -> the DMs of that user that reached this
        # process while its conversations were being listed (see begin_registration)
        self.registering: dict[int, dict[Connection, list[StoredMessage]]] = {}
        # this process's commits under way (the batcher reports them), for the gap fills
        self.local_commits = CommitsInFlight()
        self.local_commit_wait_seconds = LOCAL_COMMIT_WAIT_SECONDS
        # numbers the edits, deletes and reactions as they are released here (Gate.last_event):
        # it only grows, so a gate made again never repeats a number an older one gave
        self.event_numbers = itertools.count(1)

    # --- membership ---------------------------------------------------------------------

    def begin_registration(self, conn: Connection) -> None:
        """Keep the user's DMs from now until `add_user_connection` lists the connection.

        The connection is listed with its conversations as read meanwhile. A DM committed
        after that read but delivered before the connection is listed would reach it neither
        way: not listed yet for the live stream, and not in the read (a conversation it starts
        is not even known). Those are sent on at listing.
        """
        self.registering.setdefault(conn.user_id, {})[conn] = []

    def add_user_connection(self, conn: Connection, threads: list[tuple[ChannelKey, int]]) -> None:
        """Register an authenticated connection; `threads` are its user's conversations with their last seq."""
        held = self._end_registration(conn)
        self.connections_by_user.setdefault(conn.user_id, set()).add(conn)
        for channel, last_seq in threads:
            self.track(channel, last_seq, None)
        if held:
            self._send_on(conn, held, dict(threads))

    def _end_registration(self, conn: Connection) -> list[StoredMessage]:
        pending = self.registering.get(conn.user_id)
        if pending is None:
            return []
        held = pending.pop(conn, [])
        if not pending:
            del self.registering[conn.user_id]
        return held

    def _send_on(self, conn: Connection, held: list[StoredMessage], listed_seq: dict[ChannelKey, int]) -> None:
        """The DMs that came while `conn` was being registered, not in its listing."""
        seen: set[tuple[ChannelKey, int]] = set()
        for message in sorted(held, key=lambda m: (m.channel, m.seq)):
            channel = message.channel
            if message.seq <= listed_seq.get(channel, 0) or (channel, message.seq) in seen:
                continue  # in the listing (the client reads it), or once already
            seen.add((channel, message.seq))
            gate = self.gates.get(channel)
            if gate is not None and message.seq < gate.next_seq:
                conn.send_frame(message.wire_frame)  # released to the others meanwhile
            else:
                self.deliver(message)  # dropped then (nobody here took the channel)

    def _hold_for_registering(self, message: StoredMessage) -> None:
        for user in message.channel[1:]:
            for held in self.registering.get(user, {}).values():
                held.append(message)

    def remove_user_connection(self, conn: Connection) -> None:
        self._end_registration(conn)
        connections = self.connections_by_user.get(conn.user_id)
        if connections is None:
            return
        connections.discard(conn)
        if connections:
            return
        del self.connections_by_user[conn.user_id]
        for channel in self.conversations_by_user.pop(conn.user_id, ()):
            other = channel[2] if channel[1] == conn.user_id else channel[1]
            if other in self.connections_by_user:
                # The gate stays for the other user, whose index must hold it: one whose
                # listing did not hold the conversation (see _note_conversation) has no
                # entry of its own, and the gate would outlive them both.
                self.conversations_by_user.setdefault(other, set()).add(channel)
                continue
            self.gates.pop(channel, None)
            others = self.conversations_by_user.get(other)
            if others is not None:
                others.discard(channel)
                if not others:
                    del self.conversations_by_user[other]

    def join_room(self, conn: Connection, room: str, last_seq: int, last_id: int) -> int:
        """List a connection in a room; return the id of the last message released here before it.

        Every later message reaches the connection, in order. The room's stream here starts
        after (last_seq, last_id) if new.
        """
        self.track(("r", room), last_seq, last_id)
        self.members_by_room.setdefault(room, {})[conn] = None
        return self.gates[("r", room)].last_id

    def room_last_event(self, room: str) -> int:
        """The number of the room's last edit, delete or reaction released here (0: none)."""
        gate = self.gates.get(("r", room))
        return gate.last_event if gate is not None else 0

    def leave_room(self, conn: Connection, room: str) -> None:
        members = self.members_by_room.get(room)
        if members is None:
            return
        members.pop(conn, None)
        if not members:
            del self.members_by_room[room]
            self.gates.pop(("r", room), None)

    def user_in_room(self, user_id: int, room: str) -> bool:
        """Whether a connection of this user, here, is joined to the room.

        Asked at every leave: it looks at the user's few connections, not at the room's crowd.
        """
        members = self.members_by_room.get(room)
        if members is not None:
            for conn in self.connections_by_user.get(user_id, ()):  # (a loop: no generator to make)
                if conn in members:
                    return True
        return False

    def track(self, channel: ChannelKey, last_seq: int, last_id: int | None) -> None:
        if channel not in self.gates:
            self.gates[channel] = Gate(next_seq=last_seq + 1, last_id=last_id)
        self._note_conversation(channel)

    def _note_conversation(self, channel: ChannelKey) -> None:
        if channel[0] == "d":
            for user in channel[1:]:
                # Only users connected here: one connecting later notes the conversation
                # with its listing (or takes it over at the other's last disconnect), and
                # a set for each of a user's many partners would weigh on every connect.
                if user in self.connections_by_user:
                    self.conversations_by_user.setdefault(user, set()).add(channel)

    # --- delivery -------------------------------------------------------------------------

    def deliver(self, message: StoredMessage) -> None:
        """Release a committed message to local receivers in channel order (exactly once)."""
        if self.registering and message.is_dm:
            self._hold_for_registering(message)
        channel = message.channel
        gate = self.gates.get(channel)
        if gate is None:
            gate = self._gate_for_new_conversation(message)
            if gate is None:
                return  # nobody here takes this channel
        if message.seq < gate.next_seq:
            # Seen already (the fast path and the bus both bring our own). A DM of ours
            # that a gap fill released first (it waited for the delivery in vain, see
            # LOCAL_COMMIT_WAIT_SECONDS) went out without knowing its sending tab: that
            # tab still gets its dm_sent.
            if message.origin_connection is not None and message.is_dm:
                message.origin_connection.send_frame(self._dm_sent_frame(message))
            return
        if message.seq > gate.next_seq:
            gate.pending[message.seq] = message
            self._schedule_fill(channel, gate, delay=self.gap_wait_seconds)
            return
        self._release(gate, message)
        self._drain(gate)

    def _gate_for_new_conversation(self, message: StoredMessage) -> Gate | None:
        if not message.is_dm:
            return None
        users = message.channel[1:]
        if not any(user in self.connections_by_user for user in users):
            return None
        # A conversation unknown when its local user connected was started afterwards:
        # all of it is news, from seq 1.
        gate = Gate(next_seq=1, last_id=0)
        self.gates[message.channel] = gate
        self._note_conversation(message.channel)
        return gate

    def _release(self, gate: Gate, message: StoredMessage) -> None:
        gate.next_seq = message.seq + 1
        # (within a channel ids grow with seq: this one is the highest released)
        gate.last_id = message.id if gate.last_id is None else max(gate.last_id, message.id)
        if isinstance(message, StoredEvent):
            gate.last_event = next(self.event_numbers)
        if message.is_dm:
            self._fan_out_dm(message)
        else:
            for conn in tuple(self.members_by_room.get(message.room, ())):
                conn.room_message(message)

    def _drain(self, gate: Gate) -> None:
        """Release the early arrivals that are next in order; drop those a jump of
        next_seq (a hole skipped, a fill) has overtaken.

        By key, not by min() per message: thousands can wait behind one gap, and a scan
        per release would block the event loop.
        """
        pending = gate.pending
        while pending:
            message = pending.pop(gate.next_seq, None)
            if message is None:
                break
            self._release(gate, message)
        if pending:
            for seq in [seq for seq in pending if seq < gate.next_seq]:
                del pending[seq]

    def _fan_out_dm(self, message: StoredMessage) -> None:
        _, low, high = message.channel  # the two parties (the same user twice: a note to self)
        frame = message.wire_frame
        receivers = set(self.connections_by_user.get(low, ()))
        receivers.update(self.connections_by_user.get(high, ()))
        for conn in receivers:
            if conn is message.origin_connection:
                conn.send_frame(self._dm_sent_frame(message))
            else:
                conn.send_frame(frame)

    @staticmethod
    def _dm_sent_frame(message: StoredMessage) -> bytes:
        return text_frame(protocol.encode(protocol.dm_sent_frame(message.data)))

    # --- gaps ----------------------------------------------------------------------------------

    def _schedule_fill(self, channel: ChannelKey, gate: Gate, delay: float, up_to_seq: int | None = None) -> None:
        if gate.filling:
            if up_to_seq is not None:
                # A fill is on its way already (for a gap before an early arrival): it goes
                # on to this head too, or what came after the last arrival would wait for
                # two more periodic checks (after a bus reconnect, say).
                gate.fill_up_to = max(gate.fill_up_to or 0, up_to_seq)
            return
        gate.filling = True
        gevent.spawn_later(delay, self._fill, channel, gate, up_to_seq, time.monotonic() + delay)

    def _fill(self, channel: ChannelKey, gate: Gate, up_to_seq: int | None, due: float) -> None:
        """Fetch what is missing before the earliest waiting message (or up to a seq).

        A process too busy to keep up with the bus sees a gap in nearly every room, mostly
        of messages still on their way; fetching them all at once loads PostgreSQL and the
        worker more and the lag grows. So at most FILLS_AT_ONCE fills query at once, each
        looking again whether its gap is still open when its turn comes; and a gap is
        fetched only once the bus has handled what reached this process by the time the
        fill was due.
        """
        if up_to_seq is None and self.gates.get(channel) is gate:
            handled = self.bus_handled_until()
            if handled is not None and handled < due:
                GAP_FILL_DEFERRALS.inc()
                gevent.spawn_later(self.gap_wait_seconds, self._fill, channel, gate, up_to_seq, due)
                return  # still `filling`: this greenlet looks again later
        try:
            while self.gates.get(channel) is gate:
                with self._fetching:
                    # (looked at once a fetch may run: the gap may have closed meanwhile)
                    targets = [up_to_seq, gate.fill_up_to, min(gate.pending) - 1 if gate.pending else None]
                    target = max((seq for seq in targets if seq is not None), default=None)
                    if target is None or target < gate.next_seq:
                        gate.fill_up_to = None
                        return
                    GAP_FILLS.inc()
                    found = self.fetch(channel, gate.last_id, gate.next_seq, target, FILL_PAGE_SIZE)
                # What it read may be our own commit, not delivered yet: that delivery,
                # which knows the sending connection, is to release it.
                self.local_commits.wait(channel, self.local_commit_wait_seconds)
                if self.gates.get(channel) is not gate:
                    return
                self.catch_up(gate, found)
                if len(found) < FILL_PAGE_SIZE:
                    # Everything up to `target` is committed: a seq still missing is a
                    # hole (a resend another process stored first) and is skipped.
                    gate.next_seq = max(gate.next_seq, target + 1)
                    self._drain(gate)
                    up_to_seq = None
                    if gate.fill_up_to is not None and gate.fill_up_to <= target:
                        gate.fill_up_to = None
        except ChatError:
            # The database is away; the periodic check tries again.
            pass
        except Exception:
            log.exception("filling a gap in %s failed", channel)
        finally:
            gate.filling = False

    def catch_up(self, gate: Gate, found: list[StoredMessage]) -> None:
        """Release fetched messages (id order) that this process has not released yet.

        Of one that arrived meanwhile too, the arrival is released (it may know its sender here).
        """
        for message in found:
            if self.registering and message.is_dm:
                self._hold_for_registering(message)
            if message.seq >= gate.next_seq:
                gate.next_seq = message.seq  # a lower seq missing here is a hole
                self._release(gate, gate.pending.pop(message.seq, message))
        self._drain(gate)

    def check_heads(self, heads: dict[ChannelKey, int], at_once: bool) -> None:
        """Given each channel's last committed seq, fetch whatever has not arrived.

        Right after the bus reconnects (`at_once`) everything behind is fetched; on the
        periodic check only what was behind already at the previous check, since a
        message committed a moment ago may simply not have arrived yet.
        """
        for channel, head in heads.items():
            gate = self.gates.get(channel)
            if gate is None:
                continue
            if head < gate.next_seq:
                gate.behind_at = None
            elif at_once or gate.behind_at == gate.next_seq:
                gate.behind_at = None
                self._schedule_fill(channel, gate, delay=0, up_to_seq=head)
            else:
                gate.behind_at = gate.next_seq

    def receives(self, conn: Connection, channel: ChannelKey) -> bool:
        """Whether this connection is among those a channel's stream reaches here."""
        if channel[0] == "r":
            return conn in self.members_by_room.get(channel[1], ())
        return conn in self.connections_by_user.get(conn.user_id, ()) and conn.user_id in channel[1:]

    # --- other events ----------------------------------------------------------------------------

    def to_room_except_user(self, room: str, user_id: int, frame: bytes) -> None:
        """Send a frame to every member of a room here but the connections of one user."""
        for conn in tuple(self.members_by_room.get(room, ())):
            if conn.user_id != user_id:
                conn.send_frame(frame)

    def to_connections_in_room(self, connections, room: str, user_id: int, frame: bytes) -> None:
        """Send a frame to those of these connections still in the room here, but one user's."""
        members = self.members_by_room.get(room, ())
        for conn in tuple(connections):
            if conn in members and conn.user_id != user_id:
                conn.send_frame(frame)

    def to_user(self, user_id: int, frame: bytes) -> None:
        """Send a frame to every connection of one user here."""
        for conn in tuple(self.connections_by_user.get(user_id, ())):
            conn.send_frame(frame)
