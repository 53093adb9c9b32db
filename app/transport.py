"""A client's WebSocket transport: the socket, its read watcher, the outbox, one read loop.

The protocol itself (frames, ping/pong, the close handshake) is app/wscore.py's; this
moves its bytes. Reading is event driven: an idle connection is a libev read watcher,
and only when bytes arrive does a reading turn run, in a kept greenlet (app/runners.py),
to handle the messages they complete (a greenlet parked in recv() would cost ~9 KB for
the connection's whole life). Sending writes straight to the non-blocking socket from
whoever sends, and only what the kernel does not take at once is queued in the outbox,
drained by a flusher greenlet that exists only while there is something to drain; the
answers to a burst of messages are held for one write (_cork), as a fan-out's are
(coalesced). A client too far behind is closed with 1008; its rooms never wait for it.
"""

from __future__ import annotations

import itertools
import logging
import socket
import time
from collections.abc import Callable

import gevent
from gevent.event import Event

from . import internals
from .metrics import FRAMES_OUT, SLOW_CLIENTS
from .runners import run_soon
from .wscore import CLOSE, END, NEED_MORE, SEND, Signal, WebSocketCore
from .wsframe import CLOSE_POLICY_VIOLATION, ping_frame

log = logging.getLogger(__name__)

# Bytes asked of the socket per read; a chat frame is usually far smaller.
RECEIVE_BYTES = 16 * 1024
# Messages one reading turn handles before letting other connections have theirs.
MESSAGES_PER_TURN = 32
# Bytes one reading turn takes from the socket before the other connections get theirs:
# control frames and fragments are no messages, so MESSAGES_PER_TURN alone does not end a turn.
READ_BYTES_PER_TURN = RECEIVE_BYTES

# The flusher writes at most about this much per send(), so it never copies a slow client's
# whole queue into one bytes object.
FLUSH_CHUNK_BYTES = 64 * 1024
# A closing connection waits beyond CLOSE_TIMEOUT_SECONDS for the write in progress, at this
# speed (a slow mobile link): a frame half-way out cannot be cut short, the close frame follows
# it, and a client reading that fast still gets its close code instead of a cut connection.
SLOW_LINK_BYTES_PER_SECOND = 32 * 1024
# How long a client that was sent our close frame gets to answer it before the socket is
# cut: closing a socket with unread data resets it, and the client could lose our close frame.
CLOSE_REPLY_WAIT_SECONDS = 1.0

# Bytes a reading turn holds for its own client (see Transport._cork) before writing them
# anyway: the hold must never grow with what one turn's messages ask for.
CORK_MAX_BYTES = 64 * 1024

# Bytes queued for one client past which it is closed as too slow while the process's
# queues together hold more than OUTBOX_TOTAL_MAX_BYTES: clients that keep up (a frame or
# two waiting) are never closed for the others.
OUTBOX_SHARE_BYTES = 256 * 1024

_ids = itertools.count(1)

# The frames each client is sent while a `coalesced()` block is open, written when it ends:
# one frame as bytes, several as a list (most clients get one, and a list each would cost).
_coalescing: dict[Transport, bytes | list[bytes]] | None = None


class _Coalesced:
    """The block `coalesced()` opens: a class, not a generator, since every group commit's
    fan-out opens one (contextlib's generator machinery cost ~5,000 instructions a block)."""

    __slots__ = ("depth",)

    def __init__(self) -> None:
        self.depth = 0

    def __enter__(self) -> None:
        global _coalescing
        if self.depth == 0:
            _coalescing = {}
        self.depth += 1

    def __exit__(self, *exc_info: object) -> None:
        global _coalescing
        self.depth -= 1
        if self.depth:
            return  # a nested block leaves the writing to the outer one
        held, _coalescing = _coalescing, None
        for transport, frames in held.items():
            transport._write(b"".join(frames) if frames.__class__ is list else frames)


_COALESCED = _Coalesced()  # blocks never wait, so one process-wide block serves every greenlet


def coalesced() -> _Coalesced:
    """Write the frames sent inside the block once per client, joined, when it ends.

    A fan-out loop can send one client many frames in a row: the presence of a crowd
    reconnecting (each user told in each of its rooms to everyone online there), a group
    commit's messages, the bus's payloads read at once. Joined, a client's frames take one
    system call, not one each. Each client's frames keep their order, and reach the socket
    before anything sent after the block. The block must not wait (no I/O): what other
    greenlets send meanwhile would wait with it. A nested block leaves the writing to the
    outer one.
    """
    return _COALESCED


class Transport:
    """The I/O of one client's WebSocket after the handshake."""

    # Slots, not a __dict__: thousands of idle connections each hold one of these, and
    # past 30 attributes an instance dict stops sharing its keys (CPython's limit).
    __slots__ = (
        "id",
        "sock",
        "raw",
        "peer",
        "core",
        "outbox",
        "outbox_bytes",
        "held_bytes",
        "outbox_limit",
        "outbox_max_bytes",
        "outbox_total_max_bytes",
        "close_timeout",
        "flusher",
        "writing",
        "corked",
        "corked_bytes",
        "cork_flush",
        "progress_at",
        "drained",
        "last_heard",
        "ping_sent_at",
        "closed",
        "peer_gone",
        "watcher",
        "reading",
        "on_message",
        "on_end",
        "ended",
    )

    # Bytes held for every client of this process together, until the kernel takes them
    # (see _over_process_budget).
    queued_in_process = 0

    def __init__(self, sock, config: dict, peer: str) -> None:
        self.id = next(_ids)
        self.sock = sock  # gevent socket: send waits for the socket to take something
        self.raw = internals.os_socket(sock)  # non-blocking, never yields
        if config["SOCKET_SEND_BUFFER_BYTES"]:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, config["SOCKET_SEND_BUFFER_BYTES"])
        self.peer = peer
        self.core = WebSocketCore(config["MAX_FRAME_BYTES"])
        # Lists, not deques: an empty deque takes ~600 bytes, and an idle connection has one.
        self.outbox: list[bytes] = []
        # Bytes of the outbox and the write in progress that the kernel has not taken yet.
        self.outbox_bytes = 0
        # Bytes the session holds for the client outside the outbox (live messages waiting
        # for a replay): they count toward the same limits.
        self.held_bytes = 0
        self.outbox_limit = config["OUTBOX_MAX_FRAMES"]
        self.outbox_max_bytes = config["OUTBOX_MAX_BYTES"]
        self.outbox_total_max_bytes = config["OUTBOX_TOTAL_MAX_BYTES"]
        self.close_timeout = config["CLOSE_TIMEOUT_SECONDS"]
        self.flusher: gevent.Greenlet | None = None
        # What the kernel has not taken yet of a frame begun on the wire (or the flusher's
        # chunk): it must be finished before anything else goes, the close frame included.
        self.writing: memoryview | None = None
        # While a reading turn handles a burst of messages: the frames for this client,
        # written joined when the turn waits or ends (see _cork). None when not corked.
        self.corked: list[bytes] | None = None
        self.corked_bytes = 0
        self.cork_flush = None  # the loop callback that writes them when the turn waits
        # When the kernel last took queued bytes (or queueing began): a client whose
        # queue makes no progress for the pong timeout reads nothing.
        self.progress_at = 0.0
        self.drained: Event | None = None  # set when the queue empties, while awaited
        self.last_heard = time.monotonic()
        self.ping_sent_at: float | None = None
        self.closed = False
        # A send failed: the peer is gone, though its reader may not have found out yet
        # (it is busy, say, sending a replay).
        self.peer_gone = False
        # set by watch(): the read watcher and what to do with each message and at the end
        self.watcher = None
        self.reading = False  # a reading turn (_pump) is scheduled or running
        self.on_message: Callable[[Transport, str | bytes], None] | None = None
        self.on_end: Callable[[Transport], None] | None = None
        self.ended = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} peer={self.peer}>"

    @property
    def close_code(self) -> int | None:
        """The code of our close frame once the connection is closing, else None."""
        return self.core.close_code

    # --- sending --------------------------------------------------------------------------

    def send_frame(self, frame: bytes) -> None:
        """Send a complete WebSocket frame now if the socket takes it, else queue it.

        Writing straight from the fan-out loop costs one non-blocking send() and no
        greenlet switch; only what the kernel does not take at once is queued for the
        flusher. A client too far behind is closed with 1008.
        """
        if self.core.close_code is not None:
            return
        FRAMES_OUT.value += 1
        if _coalescing is not None:
            held = _coalescing.get(self)
            if held is None:
                _coalescing[self] = frame
            elif held.__class__ is list:
                held.append(frame)
            else:
                _coalescing[self] = [held, frame]
            return
        if self.corked is None and self.writing is None and not self.outbox:
            # What _write and _write_now would decide, decided here: this runs once per
            # frame and receiver, and a call less is a few per cent of a fan-out.
            self._send_now(frame)
        else:
            self._write(frame)

    def _write(self, frame: bytes) -> None:
        corked = self.corked
        if corked is not None:
            corked.append(frame)
            self.corked_bytes += len(frame)
            if self.corked_bytes > CORK_MAX_BYTES:
                self._flush_cork()
            elif self.cork_flush is None:
                self.cork_flush = gevent.get_hub().loop.run_callback(self._flush_cork)
            return
        self._write_now(frame)

    def _write_now(self, frame: bytes) -> None:
        if self.writing is None and not self.outbox:
            self._send_now(frame)  # nothing queued and nobody mid-write: bytes cannot interleave
        else:
            self._queue(frame)

    def _send_now(self, frame: bytes) -> None:
        """Write a frame on a socket with nothing queued; queue what the kernel does not take."""
        try:
            sent = self.raw.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.peer_gone = True  # its reader finds out and cleans up
            return
        if sent == len(frame):
            return
        self.progress_at = time.monotonic()
        if sent:
            # Begun on the wire: the rest goes first, whatever happens next.
            self.writing = memoryview(frame)[sent:]
            self._count_queued(len(frame) - sent)
            if self._overflows(0):
                self._overflow()
            else:
                self._start_flusher()
        else:
            self._queue(frame)

    def _queue(self, frame: bytes) -> None:
        if self._overflows(len(frame)):
            self._overflow()
            return
        self.outbox.append(frame)
        self._count_queued(len(frame))
        self._start_flusher()

    def _cork(self) -> None:
        """Hold the frames for this client from now until the reading turn waits or ends.

        A client that sends many messages at once (the twenty joins of a reconnect, each
        answered with a join_ack and its replayed messages) would otherwise get one send()
        per answer frame: sixty system calls per reconnect, where one or two carry the
        same bytes. The hold is written by a loop callback, which runs as soon as the turn
        waits for anything (a database read, a commit) and gives the loop back, and at the
        turn's end: it never outlasts a stretch of work that does not wait. Frames that
        others send meanwhile (fan-outs, pings) join the hold, so their order is kept.
        """
        if self.corked is None:
            self.corked = []

    def _uncork(self) -> None:
        """Write what the turn held and stop holding (the end of a reading turn)."""
        if self.corked is not None:
            self._flush_cork()
            self.corked = None

    def _flush_cork(self) -> None:
        if self.cork_flush is not None:
            self.cork_flush.stop()
            self.cork_flush = None
        corked = self.corked
        if corked:
            self.corked = []
            self.corked_bytes = 0
            self._write_now(corked[0] if len(corked) == 1 else b"".join(corked))

    def _overflows(self, more: int) -> bool:
        return (
            len(self.outbox) >= self.outbox_limit
            or self.outbox_bytes + self.held_bytes + more > self.outbox_max_bytes
            or self._over_process_budget(more)
        )

    def _over_process_budget(self, more: int) -> bool:
        """Whether this client, behind already, would take the process's queues past OUTBOX_TOTAL_MAX_BYTES.

        Each client's own bound does not bound their sum: many clients that never read add up.
        """
        return (
            Transport.queued_in_process + more > self.outbox_total_max_bytes
            and self.outbox_bytes + self.held_bytes + more > OUTBOX_SHARE_BYTES
        )

    def _overflow(self) -> None:
        SLOW_CLIENTS.inc()
        log.info(
            "closing %r: it reads too slowly (%d frames, %d bytes queued, %d held; %d in the process)",
            self,
            len(self.outbox),
            self.outbox_bytes,
            self.held_bytes,
            Transport.queued_in_process,
        )
        self._drop_queue()
        self.close(CLOSE_POLICY_VIOLATION, "too slow: outgoing queue overflowed")

    def _count_queued(self, delta: int) -> None:
        self.outbox_bytes += delta
        Transport.queued_in_process += delta

    def hold(self, size: int) -> None:
        """Count `size` bytes the session keeps for the client outside the outbox.

        A client past its limits with them is closed with 1008 as too slow.
        """
        self.held_bytes += size
        Transport.queued_in_process += size
        if size > 0 and self.core.close_code is None and self._overflows(0):
            self._overflow()

    def _drop_queue(self) -> None:
        """Forget the queued frames, but for the rest of a frame begun on the wire.

        Cut short, that frame would have the close frame land inside it.
        """
        self.outbox.clear()
        self._count_queued((0 if self.writing is None else len(self.writing)) - self.outbox_bytes)

    def wait_until_drained(self, timeout: float = 30.0) -> None:
        """Wait until the kernel took everything queued (flow control for long replays).

        Nothing reads the socket meanwhile, so the client's answers to pings wait unread:
        a client that keeps taking what is sent is alive, and counts as heard (else a
        replay longer than the ping interval and pong timeout would be cut).
        """
        if self.outbox_bytes and not self.closed and not self.peer_gone:
            self.drained = drained = Event()
            drained.wait(timeout)
            self.drained = None
        if not self.outbox_bytes:
            self.last_heard = time.monotonic()

    def ping(self) -> None:
        self.ping_sent_at = time.monotonic()
        self._write(ping_frame())

    def close(self, code: int, reason: str = "") -> None:
        """Send what is queued, then a close frame; cut the socket if that takes too long."""
        if self.core.start_close(code, reason):
            self._closing()

    def _closing(self) -> None:
        self._uncork()  # what the turn held goes before the close frame
        self._start_flusher()
        in_write = 0 if self.writing is None else len(self.writing)
        gevent.spawn_later(self.close_timeout + in_write / SLOW_LINK_BYTES_PER_SECOND, self.abort)

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
        """Write what is queued, then our close frame if closing, at the pace the client reads.

        Bytes stay counted until the kernel has taken them.
        """
        closing = False
        try:
            while True:
                view = self.writing
                if view is None:
                    if self.outbox:
                        view = self.writing = memoryview(self._take_chunk())
                    else:
                        frame = self.core.take_close_frame()
                        if frame is None:
                            break
                        closing = True
                        self._count_queued(len(frame))
                        view = self.writing = memoryview(frame)
                sent = self.sock.send(view)  # waits until the socket takes something
                self.progress_at = time.monotonic()
                self._count_queued(-sent)
                self.writing = view[sent:] if sent < len(view) else None
            if closing:
                gevent.spawn_later(CLOSE_REPLY_WAIT_SECONDS, self.abort)
        except OSError:
            self.peer_gone = True
            self.abort()
            self.writing = None
            self.outbox.clear()  # never to be written
            self._count_queued(-self.outbox_bytes)
        finally:
            self.flusher = None
            if self.drained is not None:
                self.drained.set()

    def _take_chunk(self) -> bytes:
        """About FLUSH_CHUNK_BYTES of whole frames from the head of the outbox, joined."""
        outbox = self.outbox
        taken = size = 0
        while taken < len(outbox) and size < FLUSH_CHUNK_BYTES:
            size += len(outbox[taken])
            taken += 1
        chunk = outbox[0] if taken == 1 else b"".join(outbox[:taken])
        del outbox[:taken]
        return chunk

    # --- receiving ----------------------------------------------------------------------------

    def absorb_early(self, data: bytes) -> None:
        """Take bytes the client sent with the upgrade request (read by the HTTP parser): they come first."""
        if data:
            self.last_heard = time.monotonic()
            self.core.receive_data(data)

    def watch(self, on_message: Callable[[Transport, str | bytes], None], on_end: Callable[[Transport], None]) -> None:
        """Call on_message for each message the client sends, in order, and on_end once at the end.

        No greenlet waits meanwhile. on_message may be replaced (self.on_message) between messages.
        """
        self.on_message = on_message
        self.on_end = on_end
        self.watcher = internals.read_watcher(self.raw.fileno())
        self.watcher.start(self._on_readable)
        if self.core.frames:
            self.reading = True
            run_soon(self._pump)  # frames that arrived with the upgrade request

    def _on_readable(self) -> None:
        # In the event loop: no blocking here. One turn at a time, so that a connection's
        # messages are handled one after another, in order. The watcher stays on while a
        # turn runs: stopping and starting it for each cost two epoll_ctl calls a message.
        # Bytes coming while a turn waits (for its message's commit, say) would wake us at
        # every loop (level-triggered) until the turn reads them: then it goes off, and
        # the turn turns it on again when it ends.
        if self.reading:
            self.watcher.stop()
            return
        self.reading = True
        run_soon(self._pump)

    def _watch_again(self) -> None:
        """End a reading turn: the watcher starts the next when bytes come."""
        self._uncork()
        self.reading = False
        if not self.watcher.active:
            self.watcher.start(self._on_readable)

    def _pump(self) -> None:
        """One reading turn: handle what the client sent, then watch again (or end).

        The only read loop: before authentication, in a session, and while closing
        (our close frame sent, waiting for the client's, whose messages on_message
        ignores) alike.
        """
        core = self.core
        try:
            handled = read = 0
            # The last recv() got less than it asked for: the socket held no more then, and
            # asking again would cost a system call that fails (EAGAIN) on almost every turn.
            drained = False
            while True:
                event = core.next_event()
                if event.__class__ is not Signal:
                    if handled:
                        self._cork()  # a burst: its answers go out together
                    self.on_message(self, event)
                    handled += 1
                    if handled % MESSAGES_PER_TURN == 0:
                        gevent.sleep(0)  # a client sending much: other connections' turn first
                elif event is NEED_MORE:
                    if drained or read >= READ_BYTES_PER_TURN:
                        self._watch_again()  # the rest (what came since) in a later turn
                        return
                    try:
                        data = self.raw.recv(RECEIVE_BYTES)
                    except BlockingIOError:
                        self._watch_again()
                        return
                    except OSError:
                        data = b""
                    if not data:
                        break
                    read += len(data)
                    drained = len(data) < RECEIVE_BYTES
                    self.last_heard = time.monotonic()
                    core.receive_data(data)
                elif event is SEND:
                    self._write(core.output)
                elif event is CLOSE:
                    self._closing()
                elif event is END:
                    break
        except Exception:
            log.exception("reading from %r failed", self)
        self._uncork()
        self._end()

    def _end(self) -> None:
        if self.ended:
            return
        self.ended = True
        if self.watcher is not None:
            self.watcher.stop()
        if self.on_end is not None:
            self.on_end(self)

    def finish(self) -> None:
        """Let the flusher write what is queued and the close frame, then close the socket.

        What the client was never sent is forgotten.
        """
        self._uncork()
        self.closed = True
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher.close()
        if self.flusher is not None:
            self.flusher.join(timeout=2)
            if self.flusher is not None:
                self.flusher.kill(block=False)
        self.writing = None
        self.outbox.clear()
        self._count_queued(-self.outbox_bytes)
        self.hold(-self.held_bytes)
        self.sock.close()
