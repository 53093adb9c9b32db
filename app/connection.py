"""One client connection: its identity, joined rooms, rate limit and outgoing queue.

Everything sent to a client goes through its outbox, drained by one writer greenlet that
joins queued frames into one socket write. A client that reads too slowly overflows the
outbox and is closed with 1008; its rooms never wait for it.
"""

from __future__ import annotations

import itertools
import logging
import socket
import time
from collections import deque

import gevent
from gevent.event import Event
from gevent.lock import Semaphore
from simple_websocket import Server
from wsproto.events import CloseConnection, Ping

from . import protocol
from .messages import StoredMessage
from .metrics import ERRORS, FRAMES_OUT, SLOW_CLIENTS
from .wsframe import text_frame

log = logging.getLogger(__name__)

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_UNAUTHORIZED = 4001

# Bytes asked of the socket per read; a chat frame is usually far smaller.
RECEIVE_BYTES = 16 * 1024

_ids = itertools.count(1)


class LockedSocket:
    """The socket as simple-websocket sees it: every write whole, one writer at a time.

    simple-websocket answers pings and closes from its event handling while our writer may
    be half-way through a frame; a lock and sendall keep frames from interleaving.
    """

    def __init__(self, sock, lock: Semaphore) -> None:
        self._sock = sock
        self._lock = lock
        # The OS socket under gevent's wrapper: non-blocking, never yields.
        self.raw = sock._sock

    def send(self, data: bytes) -> int:
        with self._lock:
            self._sock.sendall(data)
        return len(data)

    def recv(self, size: int) -> bytes:
        return self._sock.recv(size)

    def close(self) -> None:
        self._sock.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def abort(self) -> None:
        """Cut the TCP connection at once: wakes any greenlet blocked on it."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class TokenBucket:
    """A burst of `burst` frames, refilled at `rate` frames per second."""

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
    """A client's WebSocket, with its writer greenlet and its chat state."""

    def __init__(self, ws: Server, config: dict, peer: str) -> None:
        self.id = next(_ids)
        self.ws = ws
        self.peer = peer
        self.lock = Semaphore()
        if config["SOCKET_SEND_BUFFER_BYTES"]:
            ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, config["SOCKET_SEND_BUFFER_BYTES"])
        self.sock = LockedSocket(ws.sock, self.lock)
        ws.sock = self.sock
        self.user_id: int = 0
        self.username: str = ""
        self.rooms: set[str] = set()
        # rooms being replayed (join with since): live messages wait here meanwhile
        self.replay_buffers: dict[str, list[StoredMessage]] = {}
        self.rate = TokenBucket(config["RATE_BURST_FRAMES"], config["RATE_FRAMES_PER_SECOND"])
        self.outbox: deque[bytes] = deque()
        self.outbox_limit = config["OUTBOX_MAX_FRAMES"]
        self.ping_interval = config["PING_INTERVAL_SECONDS"]
        self.pong_timeout = config["PONG_TIMEOUT_SECONDS"]
        self.close_timeout = config["CLOSE_TIMEOUT_SECONDS"]
        self.wakeup = Event()
        # set by the writer whenever the outbox is empty (a replay waits on it)
        self.drained = Event()
        self.drained.set()
        self.close_code: int | None = None
        self.close_reason = ""
        self.last_heard = time.monotonic()
        self.closed = False
        self.writer = gevent.spawn(self._write_loop)

    def __repr__(self) -> str:
        return f"<Connection {self.id} user={self.user_id} peer={self.peer}>"

    # --- sending --------------------------------------------------------------------------

    def send_frame(self, frame: bytes) -> None:
        """Send a complete WebSocket frame now if the socket takes it, else queue it.

        Writing straight from the fan-out loop costs one non-blocking send() and no
        greenlet switch; only what the kernel does not take at once goes through the
        outbox and the writer greenlet. A client too far behind is closed with 1008.
        """
        if self.close_code is not None:
            return
        FRAMES_OUT.value += 1
        if not self.outbox and not self.lock.locked():
            # Nothing queued and nobody mid-write: bytes cannot interleave.
            try:
                sent = self.sock.raw.send(frame)
            except BlockingIOError:
                sent = 0
            except OSError:
                return  # the connection is gone; its reader finds out and cleans up
            if sent == len(frame):
                return
            frame = frame[sent:]
        if len(self.outbox) >= self.outbox_limit:
            SLOW_CLIENTS.inc()
            log.info("closing %r: it reads too slowly (%d frames queued)", self, len(self.outbox))
            self.outbox.clear()
            self.close(CLOSE_POLICY_VIOLATION, "too slow: outgoing queue overflowed")
            return
        self.outbox.append(frame)
        self.drained.clear()
        self.wakeup.set()

    def send(self, frame: dict) -> None:
        self.send_frame(text_frame(protocol.encode(frame)))

    def send_error(self, code: str, message: str, about: dict | None = None) -> None:
        ERRORS.labels(code).inc()
        self.send(protocol.error_frame(code, message, about))

    def room_message(self, message: StoredMessage) -> None:
        """A live message of a joined room: held back while that room is being replayed."""
        buffer = self.replay_buffers.get(message.data["room"])
        if buffer is not None:
            buffer.append(message)
        else:
            self.send_frame(message.wire_frame)

    def wait_until_drained(self, timeout: float = 30.0) -> None:
        """Wait until the writer has caught up (flow control for long replays)."""
        self.drained.wait(timeout)

    def close(self, code: int, reason: str = "") -> None:
        """Send what is queued, then a close frame; cut the socket if that takes too long."""
        if self.close_code is not None:
            return
        self.close_code = code
        self.close_reason = reason
        self.wakeup.set()
        gevent.spawn_later(self.close_timeout, self.sock.abort)

    # --- the writer greenlet --------------------------------------------------------------------

    def _write_loop(self) -> None:
        ping_sent_at: float | None = None
        try:
            while True:
                now = time.monotonic()
                if ping_sent_at is not None and self.last_heard >= ping_sent_at:
                    ping_sent_at = None  # it answered (any frame counts)
                if ping_sent_at is not None and now - ping_sent_at >= self.pong_timeout:
                    log.info("dropping %r: no answer to a ping for %.0f s", self, now - ping_sent_at)
                    self.sock.abort()
                    return
                if ping_sent_at is None and now - self.last_heard >= self.ping_interval:
                    ping_sent_at = now
                    self.sock.send(self.ws.ws.send(Ping()))
                if ping_sent_at is not None:
                    timeout = ping_sent_at + self.pong_timeout - now
                else:
                    timeout = self.last_heard + self.ping_interval - now
                self.wakeup.wait(max(timeout, 0.05))
                self.wakeup.clear()
                if self.outbox:
                    frames = b"".join(self.outbox)
                    self.outbox.clear()
                    self.sock.send(frames)
                if not self.outbox:
                    self.drained.set()
                if self.close_code is not None:
                    self._send_close()
                    return
                if self.closed:
                    return
        except (OSError, gevent.GreenletExit):
            self.sock.abort()
        except Exception:
            log.exception("writer of %r failed", self)
            self.sock.abort()

    def _send_close(self) -> None:
        try:
            self.sock.send(self.ws.ws.send(CloseConnection(self.close_code, self.close_reason)))
        except Exception:
            pass
        self.ws.connected = False
        # Give the client a moment to answer the close handshake, then cut.
        gevent.spawn_later(1.0, self.sock.abort)

    # --- receiving ----------------------------------------------------------------------------

    def receive(self, timeout: float | None = None) -> str | bytes | None:
        """The next complete frame from the client; None when the connection is over.

        Reads in this greenlet (simple-websocket's reader thread is not started), so a
        connection costs two greenlets: this one and the writer.
        """
        ws = self.ws
        deadline = None if timeout is None else time.monotonic() + timeout
        while not ws.input_buffer:
            if not ws.connected or self.closed:
                return None
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
            if not data:
                return None
            self.last_heard = time.monotonic()
            ws.ws.receive_data(data)
            # simple-websocket's event handling: answers pings, closes on oversize (1009)
            # and on the client's close, and collects complete messages in input_buffer.
            ws.connected = ws._handle_events()
        return ws.input_buffer.pop(0)

    def finish(self) -> None:
        """The handler is done: stop the writer once what is queued is written."""
        self.closed = True
        self.wakeup.set()
        self.writer.join(timeout=2)
        if not self.writer.dead:
            self.writer.kill(block=False)
