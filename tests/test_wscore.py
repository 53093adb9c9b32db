"""The WebSocket protocol of a connection without I/O (app/wscore.py): bytes in, events
out, and a table of RFC 6455 cases as a peer's conformance suite checks them."""

from __future__ import annotations

import struct

import pytest

from app.wscore import CLOSE, END, NEED_MORE, SEND, WebSocketCore
from app.wsframe import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT
from tests.support.frames import client_frame

MAX_MESSAGE_BYTES = 1000


def events(core: WebSocketCore, data: bytes = b"") -> list:
    """What the core makes of `data`, until it needs more or the client's close frame
    came: messages as themselves, ("pong", payload), ("close", code), "end"."""
    if data:
        core.receive_data(data)
    seen: list = []
    while True:
        event = core.next_event()
        if event is NEED_MORE:
            return seen
        if event is END:
            return [*seen, "end"]
        if event is SEND:
            assert core.output[0] == 0x80 | OP_PONG
            seen.append(("pong", core.output[2:]))
        elif event is CLOSE:
            seen.append(("close", core.close_code))
        else:
            seen.append(event)


def close(code: int, reason: bytes = b"") -> bytes:
    return client_frame(OP_CLOSE, struct.pack("!H", code) + reason)


def text(payload: bytes, fin: bool = True) -> bytes:
    return client_frame(OP_TEXT, payload, fin=fin)


def more(payload: bytes, fin: bool = True) -> bytes:
    return client_frame(0, payload, fin=fin)


# (client bytes, what the server does): messages, pongs, ("close", the code it sends), "end"
CONFORMANCE = {
    # framing (RFC 6455 §5.2)
    "text, empty": (text(b""), [""]),
    "text, 125 bytes": (text(b"a" * 125), ["a" * 125]),
    "text, 126 bytes: 16-bit length": (text(b"a" * 126), ["a" * 126]),
    "binary": (client_frame(OP_BINARY, b"\x00\xff"), [b"\x00\xff"]),
    "two frames in one read": (text(b"a") + text(b"b"), ["a", "b"]),
    "unmasked": (client_frame(OP_TEXT, b"hi", masked=False), [("close", 1002)]),
    "RSV1 without an extension": (client_frame(OP_TEXT, b"hi", rsv=0x40), [("close", 1002)]),
    "RSV2": (client_frame(OP_TEXT, b"hi", rsv=0x20), [("close", 1002)]),
    "RSV3": (client_frame(OP_TEXT, b"hi", rsv=0x10), [("close", 1002)]),
    "reserved data opcode 3": (client_frame(0x3, b""), [("close", 1002)]),
    "reserved data opcode 7": (client_frame(0x7, b""), [("close", 1002)]),
    "reserved control opcode 0xB": (client_frame(0xB, b""), [("close", 1002)]),
    "reserved control opcode 0xF": (client_frame(0xF, b""), [("close", 1002)]),
    "64-bit length with its top bit set": (b"\x81\xff" + (1 << 63 | 5).to_bytes(8, "big") + b"mask", [("close", 1002)]),
    # ping and pong (§5.5.2, §5.5.3)
    "ping: pong with the same payload": (client_frame(OP_PING, b"hello"), [("pong", b"hello")]),
    "ping, empty": (client_frame(OP_PING, b""), [("pong", b"")]),
    "ping, 125 bytes": (client_frame(OP_PING, b"p" * 125), [("pong", b"p" * 125)]),
    "ping, 126 bytes": (client_frame(OP_PING, b"p" * 126), [("close", 1002)]),
    "ping, fragmented": (client_frame(OP_PING, b"p", fin=False), [("close", 1002)]),
    "unsolicited pong": (client_frame(OP_PONG, b"u"), []),
    "pings answered in order with messages": (
        text(b"a") + client_frame(OP_PING, b"1") + text(b"b") + client_frame(OP_PING, b"2"),
        ["a", ("pong", b"1"), "b", ("pong", b"2")],
    ),
    # fragmentation (§5.4)
    "text in three fragments": (text(b"ab", fin=False) + more(b"cd", fin=False) + more(b"ef"), ["abcdef"]),
    "empty fragments": (text(b"", fin=False) + more(b"", fin=False) + more(b""), [""]),
    "binary in two fragments": (client_frame(OP_BINARY, b"\x01", fin=False) + more(b"\x02"), [b"\x01\x02"]),
    "ping between fragments": (
        text(b"ab", fin=False) + client_frame(OP_PING, b"p") + more(b"cd"),
        [("pong", b"p"), "abcd"],
    ),
    "continuation without a message": (more(b"x"), [("close", 1002)]),
    "text inside a fragmented message": (text(b"a", fin=False) + text(b"b"), [("close", 1002)]),
    "close between fragments": (text(b"a", fin=False) + close(1000), [("close", 1000), "end"]),
    # UTF-8 (§8.1)
    "valid multi-byte text": (text("κόσμε".encode()), ["κόσμε"]),
    "4-byte characters": (text("😀".encode()), ["😀"]),
    "invalid byte": (text(b"\xff"), [("close", 1007)]),
    "overlong encoding": (text(b"\xc0\xaf"), [("close", 1007)]),
    "surrogate": (text(b"\xed\xa0\x80"), [("close", 1007)]),
    "beyond U+10FFFF": (text(b"\xf4\x90\x80\x80"), [("close", 1007)]),
    "message ends inside a character": (text(b"\xe2\x82"), [("close", 1007)]),
    "a character split over fragments": (text(b"\xe2", fin=False) + more(b"\x82\xac"), ["€"]),
    "invalid in a fragment: fail fast": (text(b"ok", fin=False) + more(b"\xff", fin=False), [("close", 1007)]),
    # close (§5.5.1, §7.4)
    "close without a code: 1000": (client_frame(OP_CLOSE, b""), [("close", 1000), "end"]),
    "close 1000 with a reason: echoed": (close(1000, b"bye"), [("close", 1000), "end"]),
    "close 1001": (close(1001), [("close", 1001), "end"]),
    "close 1003": (close(1003), [("close", 1003), "end"]),
    "close 1007": (close(1007), [("close", 1007), "end"]),
    "close 1011": (close(1011), [("close", 1011), "end"]),
    "close 3000": (close(3000), [("close", 3000), "end"]),
    "close 4999": (close(4999), [("close", 4999), "end"]),
    "close with half a code": (client_frame(OP_CLOSE, b"\x03"), [("close", 1002)]),
    "close 0": (close(0), [("close", 1002)]),
    "close 999": (close(999), [("close", 1002)]),
    "close 1004": (close(1004), [("close", 1002)]),
    "close 1005": (close(1005), [("close", 1002)]),
    "close 1006": (close(1006), [("close", 1002)]),
    "close 1015": (close(1015), [("close", 1002)]),
    "close 1016": (close(1016), [("close", 1002)]),
    "close 2999": (close(2999), [("close", 1002)]),
    "close 5000": (close(5000), [("close", 1002)]),
    "close reason 123 bytes": (close(1000, b"r" * 123), [("close", 1000), "end"]),
    "close reason 124 bytes": (close(1000, b"r" * 124), [("close", 1002)]),
    "close reason not UTF-8": (close(1000, b"\xff"), [("close", 1007)]),
    "close, fragmented": (client_frame(OP_CLOSE, b"", fin=False), [("close", 1002)]),
    "nothing after the close frame": (
        close(1000) + text(b"late") + client_frame(OP_PING, b""),
        [("close", 1000), "end"],
    ),
    # limits
    "message of the largest size": (text(b"x" * MAX_MESSAGE_BYTES), ["x" * MAX_MESSAGE_BYTES]),
    "message one byte too big": (text(b"x" * (MAX_MESSAGE_BYTES + 1)), [("close", 1009)]),
    "too big, known from the header alone": (client_frame(OP_BINARY, b"x" * 5000)[:8], [("close", 1009)]),
    "too big once fragments add up": (text(b"x" * 600, fin=False) + more(b"x" * 600), [("close", 1009)]),
    "a message in too many fragments": (text(b"", fin=False) + more(b"", fin=False) * 2000, [("close", 1009)]),
    # violations come after what was read before them
    "a message, then a violation": (
        text(b"a") + client_frame(OP_PING, b"p") + text(b"\xff"),
        ["a", ("pong", b"p"), ("close", 1007)],
    ),
}


@pytest.mark.parametrize("data,expected", CONFORMANCE.values(), ids=CONFORMANCE)
def test_rfc6455_conformance(data, expected):
    assert events(WebSocketCore(MAX_MESSAGE_BYTES), data) == expected


@pytest.mark.parametrize("data,expected", CONFORMANCE.values(), ids=CONFORMANCE)
def test_the_same_byte_by_byte(data, expected):
    core = WebSocketCore(MAX_MESSAGE_BYTES)
    seen = []
    for index in range(len(data)):
        if seen[-1:] == ["end"]:
            break
        seen += events(core, data[index : index + 1])
    assert seen == expected


def test_nothing_is_read_after_a_violation():
    core = WebSocketCore(MAX_MESSAGE_BYTES)
    assert events(core, text(b"\xff")) == [("close", 1007)]
    assert events(core, text(b"later") + close(1000)) == []
    assert core.take_close_frame() == b"\x88\x19\x03\xeftext frame is not UTF-8"


def test_after_our_close_pings_go_unanswered_and_the_clients_close_ends_it():
    core = WebSocketCore(MAX_MESSAGE_BYTES)
    assert core.start_close(1008, "too slow")
    assert not core.start_close(1001)  # begun already: the first code stands
    assert events(core, client_frame(OP_PING, b"p") + text(b"still") + close(1000)) == ["still", "end"]
    assert core.close_code == 1008


def test_the_close_frame_is_taken_once_and_only_once_closing():
    core = WebSocketCore(MAX_MESSAGE_BYTES)
    assert core.take_close_frame() is None
    core.start_close(4001, "token expired")
    assert core.take_close_frame() == b"\x88\x0f\x0f\xa1token expired"
    assert core.take_close_frame() is None


def test_queued_messages_are_those_next_event_will_give_and_stay_queued():
    core = WebSocketCore(MAX_MESSAGE_BYTES)
    core.receive_data(text(b"one") + client_frame(OP_PING, b"p") + client_frame(OP_BINARY, b"two") + text(b"three"))
    assert core.queued_messages() == ["one", b"two", "three"]
    assert core.next_event() == "one"  # being handled: the rest waits its turn
    assert core.queued_messages() == [b"two", "three"]
    assert core.queued_messages() == [b"two", "three"]  # a look, not a read
    assert events(core) == [("pong", b"p"), b"two", "three"]
    assert core.queued_messages() == []


def test_no_message_after_a_close_or_a_violation_is_queued():
    core = WebSocketCore(MAX_MESSAGE_BYTES)
    core.receive_data(text(b"before") + close(1000) + text(b"after"))
    assert core.queued_messages() == ["before"]
    violated = WebSocketCore(MAX_MESSAGE_BYTES)
    violated.receive_data(text(b"fine") + text(b"\xff") + text(b"after"))
    assert violated.queued_messages() == ["fine"]
