"""WebSocket bytes on the wire: a valid handshake's headers, and frames split out of what a client read."""

from __future__ import annotations

WEBSOCKET_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example
# The headers of a valid upgrade but for the request line and Upgrade, which tests vary.
GOOD_HEADERS = f"Connection: Upgrade\r\nSec-WebSocket-Key: {WEBSOCKET_KEY}\r\nSec-WebSocket-Version: 13"


def server_frames(stream: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each unmasked frame in what a client read, in order."""
    frames, at = [], 0
    while at < len(stream):
        opcode, length = stream[at] & 0x0F, stream[at + 1] & 0x7F
        at += 2
        if length >= 126:
            width = 2 if length == 126 else 8
            length, at = int.from_bytes(stream[at : at + width], "big"), at + width
        payload = stream[at : at + length]
        assert len(payload) == length, f"the stream ends {length - len(payload)} bytes into a frame"
        frames.append((opcode, payload))
        at += length
    return frames
