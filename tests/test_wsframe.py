"""The frame reader and writer (RFC 6455), without sockets but for the last tests."""

from __future__ import annotations

import json
import socket
import struct

import pytest
import websocket

from app import wsframe
from app.wsframe import OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT, FrameReader, ProtocolViolation
from tests.support.asyncapi import check_server_frame
from tests.support.frames import GOOD_HEADERS, client_frame, server_frames
from tests.support.identities import make_token, new_user_id


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
        # found by an audit: the order of the checks decided the code
        (b"\x81\xff" + (1 << 63 | 5).to_bytes(8, "big") + b"mask", 1002),  # length's top bit set
        (client_frame(0, b"x" * 2000), 1002),  # an orphan continuation, if oversize too
        (client_frame(OP_TEXT, b"x", fin=False) + client_frame(OP_BINARY, b"x" * 2000), 1002),
        # invalid UTF-8 in the first fragment of a message that is never finished
        (client_frame(OP_TEXT, b"ok \xff", fin=False), 1007),
        (client_frame(OP_TEXT, b"\xe2\x82", fin=False) + client_frame(0, b"x", fin=False), 1007),
        # a message that never ends in empty fragments
        (client_frame(OP_TEXT, b"", fin=False) + client_frame(0, b"", fin=False) * 2000, 1009),
    ],
)
def test_violations_close_with_the_right_code(data, code):
    with pytest.raises(ProtocolViolation) as info:
        FrameReader(max_message_bytes=1000).feed(data)
    assert info.value.code == code


def test_a_text_message_split_inside_characters_is_whole_again():
    text = "é€😀" * 50
    data = text.encode()
    pieces = [data[:1]] + [data[at : at + 3] for at in range(1, len(data), 3)]  # mostly mid-character
    frames = client_frame(OP_TEXT, pieces[0], fin=False)
    frames += b"".join(client_frame(0, piece, fin=False) for piece in pieces[1:-1])
    frames += client_frame(0, pieces[-1])
    reader = FrameReader(1000)
    got = reader.feed(frames)
    assert [(f.opcode, f.payload) for f in got] == [(OP_TEXT, text)]
    assert reader.fragments is None and reader.utf8_check is None


def test_oversize_is_refused_from_the_header_alone():
    header_only = client_frame(OP_BINARY, b"x" * 5000)[:14]
    with pytest.raises(ProtocolViolation):
        FrameReader(1000).feed(header_only)


def test_server_frames_are_unmasked_and_complete():
    assert wsframe.text_frame(b"hi") == b"\x81\x02hi"
    assert wsframe.text_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert wsframe.close_frame(1008, "slow") == b"\x88\x06\x03\xf0slow"
    assert wsframe.pong_frame(b"p") == b"\x8a\x01p"


@pytest.mark.parametrize("opcode", range(0xB, 0x10), ids=hex)
def test_reserved_control_opcodes_fail_with_1002(opcode):
    with pytest.raises(ProtocolViolation) as info:
        FrameReader(1000).feed(client_frame(opcode, b"hi"))
    assert info.value.code == 1002


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


BAD_CLOSE_PAYLOADS = {
    "half a code": (b"\x03", 1002),
    "0": (close_payload(0), 1002),
    "999": (close_payload(999), 1002),
    "1004 reserved": (close_payload(1004), 1002),
    "1005 no status, never sent": (close_payload(1005), 1002),
    "1006 abnormal, never sent": (close_payload(1006), 1002),
    "1015 TLS failure, never sent": (close_payload(1015), 1002),
    "1016 unassigned": (close_payload(1016), 1002),
    "2999 unassigned": (close_payload(2999), 1002),
    "5000": (close_payload(5000), 1002),
    "65535": (close_payload(65535), 1002),
    "reason not UTF-8": (close_payload(1000, b"\xff\xfe"), 1007),
    "reason ends inside a character": (close_payload(1000, "é".encode()[:1]), 1007),
}


@pytest.mark.parametrize("payload,code", BAD_CLOSE_PAYLOADS.values(), ids=BAD_CLOSE_PAYLOADS)
def test_bad_close_frames_fail_with_the_right_code(payload, code):
    with pytest.raises(ProtocolViolation) as info:
        FrameReader(1000).feed(client_frame(OP_CLOSE, payload))
    assert info.value.code == code


def test_close_codes_accepted_are_exactly_those_that_may_be_sent():
    def accepted(code: int) -> bool:
        try:
            FrameReader(1000).feed(client_frame(OP_CLOSE, close_payload(code)))
        except ProtocolViolation:
            return False
        return True

    registered = {*range(1000, 1004), *range(1007, 1015)}  # RFC 6455 §7.4.1 and IANA
    assert {code for code in range(65536) if accepted(code)} == registered | set(range(3000, 5000))


@pytest.mark.parametrize(
    "reason,sent",
    [
        ("x" * 200, "x" * 123),
        ("é" * 100, "é" * 61),
        ("a" + "é" * 100, "a" + "é" * 61),
        ("€" * 50, "€" * 41),
        ("ab" + "😀" * 40, "ab" + "😀" * 30),
    ],
    ids=["ascii", "2-byte", "2-byte off by one", "3-byte", "4-byte"],
)
def test_long_close_reason_is_cut_on_a_character_boundary(reason, sent):
    """A close frame's payload is at most 125 bytes: the code, then at most 123 of reason."""
    frame = wsframe.close_frame(1008, reason)
    assert frame[:4] == bytes((0x88, 2 + len(sent.encode()))) + b"\x03\xf0"
    assert frame[4:].decode() == sent


PING_MESSAGE = client_frame(OP_TEXT, b'{"type":"ping"}')
VIOLATIONS = {
    "oversize header": (client_frame(OP_TEXT, b"x" * 2000)[:8], 1009),
    "reserved opcode": (client_frame(0xB, b"?"), 1002),
    "text not UTF-8": (client_frame(OP_TEXT, b"\xff"), 1007),
    "invalid close code": (client_frame(OP_CLOSE, close_payload(1005)), 1002),
}


@pytest.mark.parametrize("violation,code", VIOLATIONS.values(), ids=VIOLATIONS)
def test_frames_read_before_a_violation_come_with_it(violation, code):
    """They were valid: the connection handles them before it closes."""
    with pytest.raises(ProtocolViolation) as info:
        FrameReader(1000).feed(PING_MESSAGE + client_frame(OP_PING, b"p") + violation)
    assert info.value.code == code
    assert [(f.opcode, f.payload) for f in info.value.frames] == [(OP_TEXT, '{"type":"ping"}'), (OP_PING, b"p")]


# --- over a real connection (fixtures in conftest.py) --------------------------------------------------


def close_code_received(client) -> int:
    """The code of the server's close frame, reading past the frames before it."""
    client.ws.settimeout(5)
    while True:
        opcode, data = client.ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(data[:2], "big")


def test_a_message_just_before_a_violation_is_answered_before_the_close(connect):
    alice = connect()
    ping = websocket.ABNF.create_frame(json.dumps({"type": "ping"}), websocket.ABNF.OPCODE_TEXT).format()
    oversize = websocket.ABNF.create_frame("x" * (70 * 1024), websocket.ABNF.OPCODE_TEXT).format()
    alice.ws.sock.sendall(ping + oversize[:14])  # one write: the server reads both at once
    assert alice.expect("pong", timeout=5)
    assert close_code_received(alice) == 1009


@pytest.mark.parametrize("code", [999, 1005, 1006, 1015, 2999])
def test_an_invalid_close_code_is_answered_with_1002(connect, code):
    """Never echoed: 1005, 1006 and 1015 must not be on the wire, the rest is unassigned."""
    alice = connect()
    alice.ws.sock.sendall(websocket.ABNF.create_frame(close_payload(code), websocket.ABNF.OPCODE_CLOSE).format())
    assert close_code_received(alice) == 1002


def test_frames_sent_before_the_101_are_not_lost(server):
    """RFC 6455 asks clients to wait for the handshake's answer; some send their first
    frames right behind the request, which the HTTP parser reads along with it."""
    user_id = new_user_id()
    auth = json.dumps({"type": "auth", "token": make_token(user_id, "eager")}).encode()
    ping = json.dumps({"type": "ping"}).encode()
    request = f"GET /ws HTTP/1.1\r\nHost: chat\r\nUpgrade: websocket\r\n{GOOD_HEADERS}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request + client_frame(OP_TEXT, auth) + client_frame(OP_TEXT, ping))  # one write
        received = b""
        while received.count(b'"type":') < 2:
            chunk = sock.recv(4096)
            assert chunk, f"closed after {received!r}"
            received += chunk
    head, _, frames = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    kinds = [check_server_frame(json.loads(payload))["type"] for _, payload in server_frames(frames)]
    assert kinds == ["welcome", "pong"]
