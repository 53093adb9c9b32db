"""WebSocket frames built by hand for what the server sends most: unmasked text frames.

A server's frames are never masked, so the bytes of one message are the same for every
receiver: build them once per message and write them to every socket.
"""

from __future__ import annotations

import struct

_OPCODE_TEXT_FIN = 0x81


def text_frame(payload: bytes) -> bytes:
    """One complete (FIN) text frame carrying `payload`, which must be UTF-8."""
    length = len(payload)
    if length < 126:
        header = bytes((_OPCODE_TEXT_FIN, length))
    elif length < 65536:
        header = struct.pack("!BBH", _OPCODE_TEXT_FIN, 126, length)
    else:
        header = struct.pack("!BBQ", _OPCODE_TEXT_FIN, 127, length)
    return header + payload
