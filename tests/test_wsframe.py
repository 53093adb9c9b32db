"""The frame reader and writer (RFC 6455) without sockets."""

from __future__ import annotations

import os
import struct

import pytest

from app import wsframe
from app.wsframe import OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT, FrameReader, ProtocolViolation


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


@pytest.mark.parametrize("size", [0, 1, 5, 125, 126, 65535, 65536, 70000])
def test_text_of_every_length_class_round_trips(size):
    text = ("héllo" * (size // 5 + 1))[:size]
    reader = FrameReader(max_message_bytes=200_000)
    frames = reader.feed(client_frame(OP_TEXT, text.encode()))
    assert [(f.opcode, f.payload) for f in frames] == [(OP_TEXT, text)]


def test_bytes_may_arrive_one_at_a_time():
    reader = FrameReader(1000)
    data = client_frame(OP_TEXT, b'{"type":"ping"}') + client_frame(OP_PING, b"hi")
    frames = []
    for index in range(len(data)):
        frames += reader.feed(data[index : index + 1])
    assert [(f.opcode, f.payload) for f in frames] == [(OP_TEXT, '{"type":"ping"}'), (OP_PING, b"hi")]


def test_fragments_are_joined_and_control_frames_may_interleave():
    reader = FrameReader(1000)
    data = (
        client_frame(OP_TEXT, b"ab", fin=False)
        + client_frame(OP_PING, b"p")
        + client_frame(0, b"cd", fin=False)
        + client_frame(0, b"ef")
    )
    frames = reader.feed(data)
    assert [(f.opcode, f.payload) for f in frames] == [(OP_PING, b"p"), (OP_TEXT, "abcdef")]


def test_close_frame_carries_its_code():
    frame = FrameReader(1000).feed(client_frame(OP_CLOSE, struct.pack("!H", 4000) + b"bye"))[0]
    assert (frame.opcode, frame.close_code, frame.payload) == (OP_CLOSE, 4000, b"bye")


@pytest.mark.parametrize(
    "data,code",
    [
        (client_frame(OP_TEXT, b"x" * 2000), 1009),
        (client_frame(OP_TEXT, b"x" * 600, fin=False) + client_frame(0, b"x" * 600), 1009),
        (client_frame(OP_TEXT, b"hi", masked=False), 1002),
        (client_frame(OP_TEXT, b"hi", rsv=0x40), 1002),
        (client_frame(OP_PING, b"x" * 126), 1002),
        (client_frame(OP_PING, b"x", fin=False), 1002),
        (client_frame(0, b"orphan"), 1002),
        (client_frame(0x3, b"?"), 1002),
        (client_frame(OP_TEXT, b"\xff\xfe"), 1007),
    ],
)
def test_violations_close_with_the_right_code(data, code):
    with pytest.raises(ProtocolViolation) as info:
        FrameReader(max_message_bytes=1000).feed(data)
    assert info.value.code == code


def test_oversize_is_refused_from_the_header_alone():
    header_only = client_frame(OP_BINARY, b"x" * 5000)[:14]
    with pytest.raises(ProtocolViolation):
        FrameReader(1000).feed(header_only)


def test_server_frames_are_unmasked_and_complete():
    assert wsframe.text_frame(b"hi") == b"\x81\x02hi"
    assert wsframe.text_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert wsframe.close_frame(1008, "slow") == b"\x88\x06\x03\xf0slow"
    assert wsframe.pong_frame(b"p") == b"\x8a\x01p"
