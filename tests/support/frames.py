"""WebSocket bytes on the wire: a valid handshake's headers, client frames, server frames split apart."""

from __future__ import annotations

import os
import struct

WEBSOCKET_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example
# The headers of a valid upgrade but for the request line and Upgrade, which tests vary.
GOOD_HEADERS = f"Connection: Upgrade\r\nSec-WebSocket-Key: {WEBSOCKET_KEY}\r\nSec-WebSocket-Version: 13"


def client_frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True, rsv: int = 0) -> bytes:
    """A frame as a client sends it: masked."""
    first = (0x80 if fin else 0) | rsv | opcode
    length = len(payload)
    if length < 126:
        header = bytes((first, (0x80 if masked else 0) | length))
    elif length < 65536:
        header = struct.pack("!BBH", first, (0x80 if masked else 0) | 126, length)
    else:
        header = struct.pack("!BBQ", first, (0x80 if masked else 0) | 127, length)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


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


# Frames the server must refuse with an `error` (code, and a word its message names), the
# connection staying usable: test_chat sends each, test_docs checks the schemas refuse them too.
BAD_FRAMES = [
    ("not json", "bad_json", "JSON"),
    ('{"type": "join", "room": ', "bad_json", "JSON"),
    ("[1, 2]", "invalid", "object"),
    ('{"room": "x"}', "invalid", "type"),
    ({"type": "dance"}, "unknown_type", "dance"),
    ({"type": "join"}, "invalid", "room"),
    ({"type": "join", "room": ""}, "invalid", "room"),
    ({"type": "join", "room": "has space"}, "invalid", "room"),
    ({"type": "join", "room": "x" * 65}, "invalid", "room"),
    ({"type": "join", "room": 5}, "invalid", "room"),
    ({"type": "join", "room": "ok", "since": "abc"}, "invalid", "since"),
    ({"type": "message", "room": "never-joined", "content": "hi"}, "not_found", "never-joined"),
    ({"type": "message", "room": "x"}, "invalid", "content"),
    ({"type": "message", "room": "x", "content": "   "}, "invalid", "content"),
    ({"type": "message", "room": "x", "content": "a\u0000b"}, "invalid", "NUL"),
    ({"type": "message", "room": "x", "content": 42}, "invalid", "content"),
    ({"type": "message", "room": "x", "content": "y" * 4001}, "too_large", "4000"),
    ({"type": "message", "room": "x", "content": "hi", "clientId": "c" * 65}, "invalid", "clientId"),
    ({"type": "dm", "content": "hi"}, "invalid", "to"),
    ({"type": "dm", "to": "bob", "content": "hi"}, "invalid", "to"),
    ({"type": "dm", "to": 1.5, "content": "hi"}, "invalid", "to"),
    ({"type": "dm", "to": 999_999_999_999, "content": "hi"}, "not_found", "999999999999"),
    ({"type": "dm", "to": 0, "content": "hi"}, "not_found", "user 0"),
    ({"type": "dm", "to": -7, "content": "hi"}, "not_found", "user -7"),
    ({"type": "room_history", "room": "x", "limit": 0}, "invalid", "limit"),
    ({"type": "room_history", "room": "x", "limit": -3}, "invalid", "limit"),
    ({"type": "room_history", "room": "x", "limit": "ten"}, "invalid", "limit"),
    ({"type": "room_history", "room": "no-such-room-anywhere"}, "not_found", "no-such-room-anywhere"),
    ({"type": "dm_history"}, "invalid", "with"),
    ({"type": "dm_history", "with": 999_999_999_999}, "not_found", "999999999999"),
    ({"type": "dm_history", "with": 0}, "not_found", "user 0"),
    # a room nobody made answers as a private one does (PROTOCOL.md §8): not_found
    ({"type": "typing", "room": "never-joined"}, "not_found", "never-joined"),
    ({"type": "typing"}, "invalid", "room"),
    ({"type": "typing", "room": "x", "to": 7}, "invalid", "not both"),
    ({"type": "typing", "to": "bob"}, "invalid", "to"),
    ({"type": "typing", "to": 999_999_999_999}, "not_found", "999999999999"),
    ({"type": "typing", "to": 0}, "not_found", "user 0"),
    ({"type": "users", "query": 5}, "invalid", "query"),
    ({"type": "users", "query": ["al"]}, "invalid", "query"),
    ({"type": "users", "query": "q" * 65}, "invalid", "64"),
    ({"type": "users", "limit": 0}, "invalid", "limit"),
    ({"type": "leave", "room": "never-joined"}, "not_found", "never-joined"),
    ({"type": "auth", "token": "not-a-token"}, "unauthorized", "token is invalid"),
]
