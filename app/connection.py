"""One client connection: its identity, joined rooms, rate limit, and the socket.

After the handshake the connection speaks WebSocket frames itself (app/wsframe.py).
Reading is event driven: an idle connection is a libev read watcher, and only when bytes
arrive does a greenlet run to handle the frames they complete, then end (a greenlet
parked in recv() would cost ~9 KB for the connection's whole life). Sending writes
straight to the non-blocking socket from whoever sends, and only what the kernel does not
take at once is queued in the outbox, drained by a flusher greenlet that exists only
while there is something to drain. A client too far behind is closed with 1008; its rooms
never wait for it.
"""

from __future__ import annotations

import itertools
import logging
import socket
import time
from collections.abc import Callable

import gevent
from gevent.lock import Semaphore

from . import protocol, wsframe
from .messages import StoredMessage
from .metrics import ERRORS, FRAMES_OUT, SLOW_CLIENTS

log = logging.getLogger(__name__)

# Bytes asked of the socket per read; a chat frame is usually far smaller.
RECEIVE_BYTES = 16 * 1024
# Messages one reading turn handles before letting other connections have theirs.
MESSAGES_PER_TURN = 32
# Bytes one reading turn takes from the socket before the next read waits for the other
# connections: control frames and fragments are no messages, and a client sending them
# faster than the worker parses them (6-byte pings, empty fragments: 3.4 MB/s did it)
# held the event loop for as long as it kept sending, until gunicorn killed the worker.
READ_BYTES_PER_TURN = RECEIVE_BYTES
# What the loops that read with a timeout (the first-frame auth, the close handshake)
# sleep once past READ_BYTES_PER_TURN: a positive time, so that the event loop runs its
# timers (theirs included) and polls before they read on.
READ_PAUSE_SECONDS = 0.001

# The flusher writes at most about this much per sendall(): joining a slow client's whole
# queue into one bytes object copied up to the whole queue, per slow client.
FLUSH_CHUNK_BYTES = 64 * 1024
# A closing connection waits this long, beyond CLOSE_TIMEOUT_SECONDS, per byte of the write
# in progress: a frame half-way out cannot be cut short, and the close frame can only
# follow it. The speed of a slow mobile link: a client that reads that fast (or faster)
# gets its close code, 1008 for a queue overflow, instead of a cut connection.
SLOW_LINK_BYTES_PER_SECOND = 32 * 1024

# Bytes queued for one client past which it is closed as too slow while the process's
# queues together hold more than OUTBOX_TOTAL_MAX_BYTES: clients that keep up (a frame or
# two waiting) are never closed for the others.
OUTBOX_SHARE_BYTES = 256 * 1024

# What _take_message returns when the bytes read so far complete no message.
_NEED_MORE = object()
# Not a wire opcode: queued in `received` for a protocol violation, so that the frames
# read before it are handled (and answered) before the connection is closed.
_VIOLATION = -1

_ids = itertools.count(1)


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


class Connection:
    """A client's WebSocket after the handshake, with its chat state."""

    # Slots, not a __dict__: thousands of idle connections each hold one of these, and
    # past 30 attributes an instance dict stops sharing its keys (CPython's limit) and
    # costs ~1.5 KB more per connection (measured: 10,000 idle connections, +19 MB).
    __slots__ = (
        "id",
        "sock",
        "raw",
        "peer",
        "reader",
        "received",
        "user_id",
        "username",
        "token_expires_at",
        "rooms",
        "replay_buffers",
        "replayed_up_to",
        "rate",
        "outbox",
        "outbox_bytes",
        "outbox_total_max_bytes",
        "outbox_limit",
        "outbox_max_bytes",
        "close_timeout",
        "write_lock",
        "flusher",
        "writing_bytes",
        "close_code",
        "close_reason",
        "last_heard",
        "ping_sent_at",
        "closed",
        "peer_gone",
        "close_received",
        "discarding",
        "watcher",
        "on_message",
        "on_end",
        "ended",
    )

    # bytes queued for every client of this process together (see _over_process_budget)
    queued_in_process = 0

    def __init__(self, sock, config: dict, peer: str) -> None:
        self.id = next(_ids)
        self.sock = sock  # gevent socket: recv and sendall yield
        self.raw = sock._sock  # the OS socket under it: non-blocking, never yields
        if config["SOCKET_SEND_BUFFER_BYTES"]:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, config["SOCKET_SEND_BUFFER_BYTES"])
        self.peer = peer
        self.reader = wsframe.FrameReader(config["MAX_FRAME_BYTES"])
        # Lists, not deques: an empty deque takes ~600 bytes, and an idle connection has both.
        self.received: list[wsframe.Frame] = []
        self.user_id: int = 0
        self.username: str = ""
        # when the token the client authenticated with expires (Unix seconds; None: never)
        self.token_expires_at: float | None = None
        self.rooms: set[str] = set()
        # rooms being replayed (join with since): live messages wait here meanwhile
        self.replay_buffers: dict[str, list[StoredMessage]] = {}
        # room -> the last id a replay sent: this process's stream of the room may still
        # be behind the database the replay read, so live messages up to it are dropped
        self.replayed_up_to: dict[str, int] = {}
        self.rate = TokenBucket(config["RATE_BURST_FRAMES"], config["RATE_FRAMES_PER_SECOND"])
        self.outbox: list[bytes] = []
        self.outbox_bytes = 0
        self.outbox_limit = config["OUTBOX_MAX_FRAMES"]
        self.outbox_max_bytes = config["OUTBOX_MAX_BYTES"]
        self.outbox_total_max_bytes = config["OUTBOX_TOTAL_MAX_BYTES"]
        self.close_timeout = config["CLOSE_TIMEOUT_SECONDS"]
        # held by whoever is in a blocking sendall, so that frames never interleave
        self.write_lock = Semaphore()
        self.flusher: gevent.Greenlet | None = None
        self.writing_bytes = 0  # the size of the flusher's write in progress
        self.close_code: int | None = None
        self.close_reason = ""
        self.last_heard = time.monotonic()
        self.ping_sent_at: float | None = None
        self.closed = False
        # A send failed: the peer is gone, though its reader may not have found out yet
        # (it is busy, say, sending a replay).
        self.peer_gone = False
        self.close_received = False  # the client's close frame arrived
        self.discarding = False
        # set by watch(): the read watcher and what to do with each message and at the end
        self.watcher = None
        self.on_message: Callable[[Connection, str | bytes], None] | None = None
        self.on_end: Callable[[Connection], None] | None = None
        self.ended = False

    def __repr__(self) -> str:
        return f"<Connection {self.id} user={self.user_id} peer={self.peer}>"

    # --- sending --------------------------------------------------------------------------

    def send_frame(self, frame: bytes) -> None:
        """Send a complete WebSocket frame now if the socket takes it, else queue it.

        Writing straight from the fan-out loop costs one non-blocking send() and no
        greenlet switch; only what the kernel does not take at once is queued for the
        flusher. A client too far behind is closed with 1008.
        """
        if self.close_code is not None:
            return
        FRAMES_OUT.value += 1
        self._write(frame)

    def _write(self, frame: bytes) -> None:
        if not self.outbox and not self.write_lock.locked():
            # Nothing queued and nobody mid-write: bytes cannot interleave.
            try:
                sent = self.raw.send(frame)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.peer_gone = True  # its reader finds out and cleans up
                return
            if sent == len(frame):
                return
            frame = frame[sent:]
        if (
            len(self.outbox) >= self.outbox_limit
            or self.outbox_bytes + len(frame) > self.outbox_max_bytes
            or self._over_process_budget(len(frame))
        ):
            SLOW_CLIENTS.inc()
            log.info(
                "closing %r: it reads too slowly (%d frames, %d bytes queued; %d in the process)",
                self,
                len(self.outbox),
                self.outbox_bytes,
                Connection.queued_in_process,
            )
            self._drop_queue()
            self.close(wsframe.CLOSE_POLICY_VIOLATION, "too slow: outgoing queue overflowed")
            return
        self.outbox.append(frame)
        self._count_queued(len(frame))
        self._start_flusher()

    def _over_process_budget(self, more: int) -> bool:
        """Whether this client, behind already, would take the process's queues past
        OUTBOX_TOTAL_MAX_BYTES: each client's bound alone let a thousand clients that
        ask for history and never read hold 16 GB."""
        return (
            Connection.queued_in_process + more > self.outbox_total_max_bytes
            and self.outbox_bytes + more > OUTBOX_SHARE_BYTES
        )

    def _count_queued(self, delta: int) -> None:
        self.outbox_bytes += delta
        Connection.queued_in_process += delta

    def _drop_queue(self) -> None:
        """Forget what is queued, but for the rest of a frame begun on the wire.

        With the flusher in a write, every queued frame is whole (it took the head). Else
        the head may be what the socket did not take of a frame written straight away:
        cut short, the close frame would land inside it and the client read garbage.
        """
        keep = 0 if self.write_lock.locked() else 1
        del self.outbox[keep:]
        self._count_queued(sum(len(frame) for frame in self.outbox) - self.outbox_bytes)
        if self.outbox:
            self.writing_bytes = self.outbox_bytes  # as good as in the write: see close()

    def send(self, frame: dict) -> None:
        self.send_frame(wsframe.text_frame(protocol.encode(frame)))

    def send_error(self, code: str, message: str, about: dict | None = None) -> None:
        ERRORS.labels(code).inc()
        self.send(protocol.error_frame(code, message, about))

    def room_message(self, message: StoredMessage) -> None:
        """A live message of a joined room: held back while that room is being replayed,
        dropped if a replay sent it already."""
        room = message.data["room"]
        buffer = self.replay_buffers.get(room)
        if buffer is not None:
            buffer.append(message)
            return
        if self.replayed_up_to:
            floor = self.replayed_up_to.get(room)
            if floor is not None:
                if message.id <= floor:
                    return
                del self.replayed_up_to[room]  # the stream has passed the replay
        self.send_frame(message.wire_frame)

    def wait_until_drained(self, timeout: float = 30.0) -> None:
        """Wait until the kernel took everything queued (flow control for long replays).

        Nothing reads the socket meanwhile, so the client's answers to pings wait unread:
        a client that keeps taking what is sent is alive, and counts as heard (else a
        replay longer than the ping interval and pong timeout would be cut).
        """
        deadline = time.monotonic() + timeout
        while self.outbox and not self.closed and not self.peer_gone and time.monotonic() < deadline:
            gevent.sleep(0.005)
        if not self.outbox:
            self.last_heard = time.monotonic()

    def ping(self) -> None:
        self.ping_sent_at = time.monotonic()
        self._write(wsframe.ping_frame())

    def close(self, code: int, reason: str = "") -> None:
        """Send what is queued, then a close frame; cut the socket if that takes too long."""
        if self.close_code is not None:
            return
        self.close_code = code
        self.close_reason = reason
        self._start_flusher()
        gevent.spawn_later(self.close_timeout + self.writing_bytes / SLOW_LINK_BYTES_PER_SECOND, self.abort)

    def expire(self) -> None:
        """The token has expired: say so and close with 4001, the code of a refused token
        (clients fetch a fresh one and reconnect)."""
        self.token_expires_at = None
        self.send_error("unauthorized", "token has expired: connect again with a fresh one")
        self.close(wsframe.CLOSE_UNAUTHORIZED, "token expired")

    def abort(self) -> None:
        """Cut the TCP connection at once: wakes any greenlet blocked on it."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _start_flusher(self) -> None:
        if self.flusher is None:
            self.flusher = gevent.spawn(self._flush)

    def _flush(self) -> None:
        """Write what is queued, blocking as long as the client reads slowly."""
        try:
            while self.outbox:
                taken = size = 0
                while taken < len(self.outbox) and size < FLUSH_CHUNK_BYTES:
                    size += len(self.outbox[taken])
                    taken += 1
                chunk = b"".join(self.outbox[:taken])
                del self.outbox[:taken]
                self._count_queued(-size)
                self.writing_bytes = len(chunk)
                with self.write_lock:
                    self.sock.sendall(chunk)
                self.writing_bytes = 0
            if self.close_code is not None:
                with self.write_lock:
                    self.sock.sendall(wsframe.close_frame(self.close_code, self.close_reason))
                # Give the client a moment to answer the close handshake, then cut.
                gevent.spawn_later(1.0, self.abort)
        except OSError:
            self.peer_gone = True
            self.abort()
        finally:
            self.flusher = None
            if self.outbox and not self.closed:
                self._start_flusher()

    # --- receiving ----------------------------------------------------------------------------

    def receive(self, timeout: float | None = None) -> str | bytes | None:
        """The next complete message from the client, waiting for it (the first-frame
        `auth`); None when the connection is over. Raises TimeoutError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        read = 0
        while True:
            message = self._take_message()
            if message is not _NEED_MORE:
                return message
            read = self._pause_if_past_budget(read)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError
            try:
                if remaining is None:
                    data = self.sock.recv(RECEIVE_BYTES)
                else:
                    with gevent.Timeout(remaining, TimeoutError):
                        data = self.sock.recv(RECEIVE_BYTES)
            except TimeoutError:
                raise  # (a subclass of OSError, which means "connection gone" here)
            except OSError:
                return None
            read += len(data)
            if not self._absorb(data):
                return None

    @staticmethod
    def _pause_if_past_budget(read: int) -> int:
        """Let the event loop run (timers, other connections) once `read` bytes have been
        read since the last pause; the count to go on with. A gevent socket's recv()
        returns at once while data waits, so a client that keeps sending would
        otherwise keep the loop, and the reader's own timeout, from ever running."""
        if read < READ_BYTES_PER_TURN:
            return read
        gevent.sleep(READ_PAUSE_SECONDS)
        return 0

    def watch(
        self, on_message: Callable[[Connection, str | bytes], None], on_end: Callable[[Connection], None]
    ) -> None:
        """From now on, call on_message for each message the client sends, in order, and
        on_end once when the connection is over; no greenlet waits meanwhile."""
        self.on_message = on_message
        self.on_end = on_end
        self.watcher = gevent.get_hub().loop.io(self.raw.fileno(), 1)  # 1: readable
        if self.received:
            gevent.spawn(self._pump)  # frames that arrived with the first-frame auth
        else:
            self.watcher.start(self._on_readable)

    def _on_readable(self) -> None:
        # In the event loop: no blocking here. The watcher stays off while the turn
        # runs, so a connection's messages are handled one after another, in order.
        self.watcher.stop()
        gevent.spawn(self._pump)

    def _pump(self) -> None:
        """One reading turn: handle what the client sent, then watch again (or end)."""
        try:
            handled = read = 0
            while True:
                message = self._take_message()
                while message is _NEED_MORE:
                    if read >= READ_BYTES_PER_TURN:
                        self.watcher.start(self._on_readable)  # the rest in a later turn
                        return
                    try:
                        data = self.raw.recv(RECEIVE_BYTES)
                    except BlockingIOError:
                        self.watcher.start(self._on_readable)
                        return
                    except OSError:
                        data = b""
                    read += len(data)
                    message = self._take_message() if self._absorb(data) else None
                if message is None:
                    break
                self.on_message(self, message)
                handled += 1
                if handled % MESSAGES_PER_TURN == 0:
                    gevent.sleep(0)  # a client sending much: other connections' turn first
        except Exception:
            log.exception("reading from %r failed", self)
        self._end()

    def _end(self) -> None:
        if self.ended:
            return
        self.ended = True
        if self.watcher is not None:
            self.watcher.stop()
        if self.on_end is not None:
            self.on_end(self)

    def _take_message(self):
        """The next message among the frames read so far, answering pings and the close
        frame on the way; _NEED_MORE if none is complete, None when the connection is over."""
        while self.received:
            frame = self.received.pop(0)
            if frame.opcode in (wsframe.OP_TEXT, wsframe.OP_BINARY):
                return frame.payload
            if frame.opcode == wsframe.OP_PING:
                if self.close_code is None:  # nothing may follow our close frame
                    self._write(wsframe.pong_frame(frame.payload))
            elif frame.opcode == wsframe.OP_CLOSE:
                self.close_received = True
                # An invalid code was a violation already: what is left is fit to echo.
                self.close(frame.close_code)
                return None
            elif frame.opcode == _VIOLATION:
                self.close(frame.close_code, frame.payload)
            # a pong: last_heard was updated when it arrived
        return None if self.closed else _NEED_MORE

    def absorb_early(self, data: bytes) -> None:
        """Take bytes the client sent before the connection was handed over (read by the
        HTTP parser along with the upgrade request): they come first."""
        if data:
            self._absorb(data)

    def _absorb(self, data: bytes) -> bool:
        """Take bytes read from the socket; False at the end of the stream.

        A protocol violation (an oversize message: 1009) closes the connection once the
        frames read before it are handled; what the client sends after it is dropped
        until it closes.
        """
        if not data:
            return False
        self.last_heard = time.monotonic()
        if self.discarding:
            return True
        try:
            self.received.extend(self.reader.feed(data))
        except wsframe.ProtocolViolation as exc:
            log.info("closing %r: %s", self, exc.reason)
            self.discarding = True
            self.received += exc.frames
            self.received.append(wsframe.Frame(_VIOLATION, exc.reason, close_code=exc.code))
        return True

    def finish(self) -> None:
        """The handler is done: let the flusher write what is queued, then close.

        After a close frame of ours, wait briefly for the client's close frame, dropping
        whatever comes before it: closing a socket with unread data resets it, and the
        client could lose our close frame. Once both close frames have crossed, the
        server closes the TCP connection at once (RFC 6455 §7.1.1).
        """
        if self.close_code is not None and not self.close_received:
            self._await_close_reply(self.CLOSE_REPLY_WAIT_SECONDS)
        self.closed = True
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher.close()
        if self.flusher is not None:
            self.flusher.join(timeout=2)
            if self.flusher is not None:
                self.flusher.kill(block=False)
        self._count_queued(-self.outbox_bytes)  # never to be written
        self.outbox.clear()
        self.sock.close()

    # How long a client that was sent a close frame gets to answer it.
    CLOSE_REPLY_WAIT_SECONDS = 1.0

    def _await_close_reply(self, timeout: float) -> None:
        """Read until the client's close frame (or the end of the stream), dropping the
        messages that come before it."""
        with gevent.Timeout(timeout, False):
            try:
                read = 0
                while not self.close_received:
                    message = self._take_message()
                    if message is None:
                        return
                    if message is _NEED_MORE:
                        read = self._pause_if_past_budget(read)
                        data = self.sock.recv(RECEIVE_BYTES)
                        read += len(data)
                        if not self._absorb(data):
                            return
            except OSError:
                pass


def watch_connections(connections, ping_interval: float, pong_timeout: float) -> None:
    """Ping connections that were silent for `ping_interval`; drop those that then stay
    silent for `pong_timeout` (any frame counts as an answer); close those whose token
    has expired. One greenlet for all, a pass at least once a second."""
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
