"""The WebSocket protocol of one server connection (RFC 6455), without I/O.

Bytes read from the socket go in (`receive_data`); out come the client's messages, one
at a time (`next_event`), and what the transport must do on the way: write a pong,
begin the close handshake, stop reading. The close handshake's state (which code we
send, whether the client's close frame came) lives here, so the transport only moves
bytes. Measured against wsproto's sans-I/O `Connection` (bench/wscore.py), this reader
costs less CPU per frame and less memory per idle connection.
"""

from __future__ import annotations

from .wsframe import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    Frame,
    FrameReader,
    ProtocolViolation,
    close_frame,
    pong_frame,
)


class Signal:
    """What next_event returns when it has no message: a named singleton."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


# No complete message in what was read: feed more bytes.
NEED_MORE = Signal("NEED_MORE")
# A ping came: write `core.output` (its pong) now, in order with the answers to messages.
SEND = Signal("SEND")
# The core began the close handshake (the client's close frame, or a violation): write
# `take_close_frame()` after what is queued.
CLOSE = Signal("CLOSE")
# The client's close frame came: read no more.
END = Signal("END")

# Not a wire opcode: queued for a protocol violation, so that the frames read before it
# are handled (and answered) before the connection is closed.
_VIOLATION = -1


class WebSocketCore:
    """Frames, ping/pong, the close handshake and protocol violations of one connection."""

    # Slots: every idle connection holds one.
    __slots__ = (
        "reader",
        "frames",
        "output",
        "close_code",
        "close_reason",
        "close_sent",
        "close_received",
        "discarding",
    )

    def __init__(self, max_message_bytes: int) -> None:
        self.reader = FrameReader(max_message_bytes)
        # A list, not a deque: an empty deque takes ~600 bytes, and an idle connection has one.
        self.frames: list[Frame] = []
        self.output = b""  # a pong to write, after SEND
        self.close_code: int | None = None  # the code of our close frame, once closing
        self.close_reason = ""
        self.close_sent = False  # our close frame was handed to the transport
        self.close_received = False  # the client's close frame arrived
        # After a violation, what the client sends is dropped until it closes.
        self.discarding = False

    def receive_data(self, data: bytes) -> None:
        """Take bytes read from the socket.

        A protocol violation (an oversize message: 1009) closes the connection once the
        frames read before it are handled.
        """
        if self.discarding:
            return
        try:
            self.frames += self.reader.feed(data)
        except ProtocolViolation as exc:
            self.discarding = True
            self.frames += exc.frames
            self.frames.append(Frame(_VIOLATION, exc.reason, close_code=exc.code))

    def next_event(self):
        """The next message (str or bytes) read so far, or a Signal: NEED_MORE, SEND, CLOSE or END."""
        frames = self.frames
        while frames:
            frame = frames.pop(0)
            opcode = frame.opcode
            if opcode == OP_TEXT or opcode == OP_BINARY:
                return frame.payload
            if opcode == OP_PING:
                if self.close_code is None:  # nothing may follow our close frame
                    self.output = pong_frame(frame.payload)
                    return SEND
            elif opcode == OP_CLOSE:
                self.close_received = True
                frames.clear()  # nothing may follow the client's close frame
                # Echo its code: an invalid one was a violation already.
                return CLOSE if self.start_close(frame.close_code) else END
            elif opcode == _VIOLATION:
                if self.start_close(frame.close_code, frame.payload):
                    return CLOSE
            # a pong: the bytes that brought it were a sign of life, nothing to answer
        return END if self.close_received else NEED_MORE

    def queued_messages(self) -> list[str | bytes]:
        """The messages read so far that next_event will give, in order (they stay queued)."""
        messages = []
        for frame in self.frames:
            if frame.opcode == OP_TEXT or frame.opcode == OP_BINARY:
                messages.append(frame.payload)
            elif frame.opcode == OP_CLOSE or frame.opcode == _VIOLATION:
                break  # nothing after it is handled
        return messages

    def start_close(self, code: int, reason: str = "") -> bool:
        """Begin the close handshake with `code`; False if it was begun already."""
        if self.close_code is not None:
            return False
        self.close_code = code
        self.close_reason = reason
        return True

    def take_close_frame(self) -> bytes | None:
        """Our close frame, once the close handshake has begun; None before that and after it was taken."""
        if self.close_code is None or self.close_sent:
            return None
        self.close_sent = True
        return close_frame(self.close_code, self.close_reason)
