"""WebSocket frames (RFC 6455) after the handshake: encoding and a small incremental reader.

The handshake is simple-websocket's (through flask-sock); after it the connection speaks
frames directly. Server frames are never masked, so the bytes of one message are the same
for every receiver: they are built once per message and written to every socket.
"""

from __future__ import annotations

import codecs
import struct
from dataclasses import dataclass

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

# Every close code the server sends (RFC 6455 §7.4), here alone.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # shutting down: reconnect elsewhere
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY_VIOLATION = 1008  # too slow a reader
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN_LATER = 1013  # the database cannot list the user's rooms: reconnect later
CLOSE_UNAUTHORIZED = 4001  # no valid token, or it expired (PROTOCOL.md §1)

# A control frame's payload is at most 125 bytes (RFC 6455 §5.5); a close frame's starts
# with the 2-byte code, which leaves 123 for the reason.
MAX_CONTROL_PAYLOAD = 125
MAX_CLOSE_REASON_BYTES = MAX_CONTROL_PAYLOAD - 2
# Codes that may appear in a close frame (RFC 6455 §7.4, IANA registry): 1004 is reserved,
# 1005, 1006 and 1015 only report a closure locally and must never be sent, the rest of
# 0-2999 is unassigned; 3000-4999 are for libraries and applications.
REGISTERED_CLOSE_CODES = frozenset((*range(1000, 1004), *range(1007, 1015)))
APPLICATION_CLOSE_CODES = range(3000, 5000)
# Frames one fragmented message may take. Browsers send a message in one frame, libraries
# in a few; empty fragments add nothing to a message's size, and without a cap a client
# could keep one open for good, costing a little memory and parsing each.
MAX_FRAGMENTS = 1024


def valid_close_code(code: int) -> bool:
    """Whether `code` may be sent in a close frame (RFC 6455 §7.4)."""
    return code in REGISTERED_CLOSE_CODES or code in APPLICATION_CLOSE_CODES


def _frame(opcode: int, payload: bytes) -> bytes:
    first = 0x80 | opcode  # FIN: the server never fragments
    length = len(payload)
    if length < 126:
        header = bytes((first, length))
    elif length < 65536:
        header = struct.pack("!BBH", first, 126, length)
    else:
        header = struct.pack("!BBQ", first, 127, length)
    return header + payload


def text_frame(payload: bytes) -> bytes:
    """One complete text frame carrying `payload`, which must be UTF-8."""
    return _frame(OP_TEXT, payload)


def ping_frame(payload: bytes = b"") -> bytes:
    return _frame(OP_PING, payload)


def pong_frame(payload: bytes) -> bytes:
    return _frame(OP_PONG, payload)


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; a reason too long for it is cut on a character boundary."""
    encoded = reason.encode()
    if len(encoded) > MAX_CLOSE_REASON_BYTES:
        # Cutting valid UTF-8 can only leave a partial character at the end: drop it.
        encoded = encoded[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore").encode()
    return _frame(OP_CLOSE, struct.pack("!H", code) + encoded)


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR with the 4-byte mask, as one big-integer operation instead of a byte loop."""
    length = len(payload)
    if not length:
        return b""
    key = (mask * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(length, "little")


class ProtocolViolation(Exception):
    """The client broke RFC 6455 (or a limit): close the connection with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        # the frames the same feed() completed before the violation: they still count
        self.frames: list[Frame] = []


@dataclass(slots=True)
class Frame:
    """A complete message (text: str, binary: bytes) or a control frame.

    A close frame's payload is its reason (UTF-8 bytes) and close_code its code, which
    is valid to send back; 1000 when the frame has none.
    """

    opcode: int
    payload: bytes | str
    close_code: int | None = None


class FrameReader:
    """Turns received bytes into complete messages and control frames."""

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self.buffer = bytearray()
        self.fragments: bytearray | None = None  # a fragmented message so far
        self.fragments_opcode = OP_TEXT
        self.fragment_count = 0
        # checks a fragmented text message's UTF-8 as its fragments come (RFC 6455 §8.1:
        # fail as soon as invalid data is seen), not only once it is complete
        self.utf8_check: codecs.IncrementalDecoder | None = None

    def feed(self, data: bytes) -> list[Frame]:
        """The messages and control frames that `data` completes, in order.

        Raises ProtocolViolation, carrying the frames completed before it.
        """
        self.buffer += data
        frames: list[Frame] = []
        try:
            while True:
                frame = self._next_frame()
                if frame is None:
                    return frames
                frames.append(frame)
        except ProtocolViolation as exc:
            exc.frames = frames
            raise

    def _next_frame(self) -> Frame | None:
        while True:
            buffer = self.buffer
            if len(buffer) < 2:
                return None
            first, second = buffer[0], buffer[1]
            fin, opcode, length = first & 0x80, first & 0x0F, second & 0x7F
            if first & 0x70:
                raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "no extension was negotiated")
            if not second & 0x80:
                raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
            offset = 2
            if length == 126:
                if len(buffer) < 4:
                    return None
                length = struct.unpack_from("!H", buffer, 2)[0]
                offset = 4
            elif length == 127:
                if len(buffer) < 10:
                    return None
                length = struct.unpack_from("!Q", buffer, 2)[0]
                offset = 10
                if length >> 63:
                    raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "the length's top bit must be 0")
            if opcode >= OP_CLOSE:
                if opcode > OP_PONG:
                    raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
                if not fin or length > MAX_CONTROL_PAYLOAD:
                    raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "bad control frame")
            elif opcode in (OP_TEXT, OP_BINARY, OP_CONTINUATION):
                if opcode == OP_CONTINUATION and self.fragments is None:
                    raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "continuation without a message")
                if opcode != OP_CONTINUATION and self.fragments is not None:
                    raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
                # Refuse an oversize message before its bytes arrive.
                if len(self.fragments or b"") + length > self.max_message_bytes:
                    raise ProtocolViolation(CLOSE_TOO_BIG, "message too big")
            else:
                raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
            end = offset + 4 + length
            if len(buffer) < end:
                return None
            payload = unmask(bytes(buffer[offset + 4 : end]), bytes(buffer[offset : offset + 4]))
            del buffer[:end]
            message = self._assemble(fin, opcode, payload)
            if message is not None:
                return message

    def _assemble(self, fin: int, opcode: int, payload: bytes) -> Frame | None:
        if opcode == OP_CLOSE:
            return self._close(payload)
        if opcode in (OP_PING, OP_PONG):
            return Frame(opcode, payload)
        if opcode == OP_CONTINUATION:  # (of a message begun: checked with the header)
            self.fragment_count += 1
            if self.fragment_count > MAX_FRAGMENTS:
                raise ProtocolViolation(CLOSE_TOO_BIG, "message in too many fragments")
            self._take_fragment(payload, fin)
            if not fin:
                return None
            opcode, payload = self.fragments_opcode, bytes(self.fragments)
            self.fragments, self.utf8_check = None, None
        elif not fin:
            self.fragments, self.fragments_opcode, self.fragment_count = bytearray(), opcode, 1
            self.utf8_check = codecs.getincrementaldecoder("utf-8")() if opcode == OP_TEXT else None
            self._take_fragment(payload, fin)
            return None
        if opcode == OP_TEXT:
            try:
                return Frame(OP_TEXT, payload.decode("utf-8"))
            except UnicodeDecodeError:
                raise ProtocolViolation(CLOSE_INVALID_DATA, "text frame is not UTF-8") from None
        return Frame(OP_BINARY, payload)

    def _take_fragment(self, payload: bytes, fin: int) -> None:
        self.fragments += payload
        if self.utf8_check is not None:
            try:
                self.utf8_check.decode(payload, final=bool(fin))
            except UnicodeDecodeError:
                raise ProtocolViolation(CLOSE_INVALID_DATA, "text frame is not UTF-8") from None

    @staticmethod
    def _close(payload: bytes) -> Frame:
        """A close frame, checked as RFC 6455 §5.5.1 and §7.4 ask."""
        if not payload:
            return Frame(OP_CLOSE, b"", close_code=CLOSE_NORMAL)
        if len(payload) == 1:
            raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "close frame with half a code")
        code = struct.unpack_from("!H", payload)[0]
        if not valid_close_code(code):
            raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
        reason = payload[2:]
        try:
            reason.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolViolation(CLOSE_INVALID_DATA, "close reason is not UTF-8") from None
        return Frame(OP_CLOSE, reason, close_code=code)
