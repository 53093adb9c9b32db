"""A client's chat session: who it is, its rooms, its replays, its rate limit.

The session is its transport (app/transport.py: socket, outbox, the read loop) plus the
chat state; a subclass rather than a member, so that the fan-out's send_frame costs no
extra call per receiver and an idle connection no extra object.
"""

from __future__ import annotations

import logging
import time

import gevent
from gevent.event import AsyncResult

from . import protocol, wsframe
from .messages import StoredMessage
from .metrics import ERRORS
from .transport import Transport
from .wsframe import CLOSE_UNAUTHORIZED

log = logging.getLogger(__name__)


class TokenBucket:
    """A burst of `burst` frames, refilled at `rate` frames per second."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, burst: int, rate: float) -> None:
        self.burst = burst
        self.rate = rate
        self.tokens = float(burst)
        self.updated = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Connection(Transport):
    """A client's WebSocket after the handshake, with its chat state."""

    __slots__ = (
        "user_id",
        "username",
        "token_expires_at",
        "rooms",
        "legacy",
        "replay_buffers",
        "replayed_up_to",
        "rate",
        "reads_ahead",
        "read_told",
    )

    def __init__(self, sock, config: dict, peer: str) -> None:
        super().__init__(sock, config, peer)
        self.user_id: int = 0
        self.username: str = ""
        # when the token the client authenticated with expires (Unix seconds; None: never)
        self.token_expires_at: float | None = None
        # room -> floor: the rooms of the user this connection receives, each with the id
        # above which every message of the room has reached it or will, live (app/membership.py)
        self.rooms: dict[str, int] = {}
        # connected at `/`, the endpoint of the earlier server's clients (PROTOCOL.md §7)
        self.legacy = False
        # rooms being replayed (join with since): live messages wait here meanwhile,
        # counted as held for the client (Transport.hold)
        self.replay_buffers: dict[str, list[StoredMessage]] = {}
        # room -> the last id a replay sent: this process's stream of the room may still
        # be behind the database the replay read, so live messages up to it are dropped
        self.replayed_up_to: dict[str, int] = {}
        self.rate = TokenBucket(config["RATE_BURST_FRAMES"], config["RATE_FRAMES_PER_SECOND"])
        # (room, since, floor) -> the resume read of a join the client sent and that waits
        # its turn, queued while an earlier one was handled (Memberships.read_ahead)
        self.reads_ahead: dict[tuple[str, int, int], AsyncResult] | None = None
        # ("r", room) or ("d", partner) -> (lastReadId, countedUpTo) of the last `read`
        # state sent here (read_is_news); made at the first
        self.read_told: dict[tuple, tuple[int, int]] | None = None

    def __repr__(self) -> str:
        return f"<Connection {self.id} user={self.user_id} peer={self.peer}>"

    def send(self, frame: dict) -> None:
        self.send_frame(wsframe.text_frame(protocol.encode(frame)))

    def send_error(self, code: str, message: str, about: dict | None = None) -> None:
        ERRORS.labels(code).inc()
        self.send(protocol.error_frame(code, message, about))

    def room_message(self, message: StoredMessage) -> None:
        """Send a live message or §10 event of a joined room, held back while the room is replayed, dropped if
        replayed (by id)."""
        if not self.replay_buffers and not self.replayed_up_to:
            self.send_frame(message.wire_frame)  # nearly always: no replay of any room under way
            return
        room = message.room
        buffer = self.replay_buffers.get(room)
        if buffer is not None:
            if self.core.close_code is None:  # else it would never be sent
                buffer.append(message)
                self.hold(len(message.wire_frame))
            return
        if self.replayed_up_to:
            floor = self.replayed_up_to.get(room)
            if floor is not None:
                if message.id <= floor:
                    return
                del self.replayed_up_to[room]  # the stream has passed the replay
        self.send_frame(message.wire_frame)

    def read_is_news(self, where: tuple, state: tuple[int, int]) -> bool:
        """Whether a `read` state (lastReadId, countedUpTo) is not older than the last one
        this connection was sent for the same room or conversation; if so it is noted.

        The stored marker never moves backwards (PROTOCOL.md §9), but the states of two
        reads at once, answered by two workers, can arrive in either order: sent second,
        the older one would show the client a marker gone back and a wrong unread count.
        A state equal to the last one is sent again: it answers a `read` of this connection.
        """
        told = self.read_told
        if told is None:
            told = self.read_told = {}
        last = told.get(where)
        if last is not None and state < last:
            return False
        told[where] = state
        return True

    def end_replay(self, room: str) -> list[StoredMessage]:
        """Stop holding the room's live messages back; those held so far, in order."""
        held = self.replay_buffers.pop(room, None) or []
        self.hold(-sum(len(message.wire_frame) for message in held))
        return held

    def expire(self) -> None:
        """Say the token has expired and close with 4001, so that the client reconnects with a fresh one."""
        self.token_expires_at = None
        self.send_error("unauthorized", "token has expired: connect again with a fresh one")
        self.close(CLOSE_UNAUTHORIZED, "token expired")


def watch_connections(connections, ping_interval: float, pong_timeout: float) -> None:
    """Ping silent connections, drop dead or non-reading ones, close those whose token expired.

    A connection silent for `ping_interval` is pinged, and dropped if it stays silent for
    `pong_timeout` (any frame counts as an answer); one that reads nothing for `pong_timeout`
    while something waits for it is dropped however much it sends. One greenlet for all, a pass
    at least once a second.
    """
    tick = min(max(min(ping_interval, pong_timeout) / 5, 0.05), 1.0)
    while True:
        gevent.sleep(tick)
        now = time.monotonic()
        wall_clock = time.time()  # `exp` is a date, not a duration
        for conn in list(connections):
            if conn.token_expires_at is not None and conn.token_expires_at <= wall_clock and conn.close_code is None:
                log.info("closing %r: its token has expired", conn)
                conn.expire()
                continue
            if conn.outbox_bytes and now - conn.progress_at >= pong_timeout:
                log.info("dropping %r: it read nothing for %.0f s", conn, now - conn.progress_at)
                conn.progress_at = now  # once: the abort ends it
                conn.abort()
                continue
            if conn.ping_sent_at is not None:
                if conn.last_heard >= conn.ping_sent_at:
                    conn.ping_sent_at = None
                elif now - conn.ping_sent_at >= pong_timeout:
                    log.info("dropping %r: no answer to a ping for %.0f s", conn, now - conn.ping_sent_at)
                    conn.ping_sent_at = None
                    conn.abort()
                    continue
            if conn.ping_sent_at is None and now - conn.last_heard >= ping_interval and conn.close_code is None:
                conn.ping()
