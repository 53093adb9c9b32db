"""A connection's sending side over a real socket pair: what the client reads when the
server gives up on a client that reads too slowly, when frames are coalesced, and when
the answers to a burst of messages are held for one write."""

from __future__ import annotations

import gevent
import gevent.socket
from gevent.event import Event

from app.connection import Connection
from app.transport import coalesced
from app.wsframe import CLOSE_POLICY_VIOLATION, OP_CLOSE, OP_TEXT, text_frame
from tests.support.connection_config import CONNECTION_CONFIG
from tests.support.frames import client_frame, server_frames


def read_to_the_end(sock) -> bytes:
    received = bytearray()
    with gevent.Timeout(10):
        while chunk := sock.recv(1 << 16):
            received += chunk
    return bytes(received)


def test_a_frame_half_written_when_the_queue_overflows_is_finished_before_the_close():
    """The socket takes part of a frame at once, the rest is queued, and the queue
    overflows before the flusher has run: the frame's rest must still go out before the
    close frame, or the client reads garbage where the 1008 should be."""
    ours, theirs = gevent.socket.socketpair()
    conn = Connection(ours, {**CONNECTION_CONFIG, "OUTBOX_MAX_FRAMES": 3}, "test")
    first = text_frame(b"1" * (1 << 20))  # more than the socket takes at once
    for index in range(5):  # in one turn: no greenlet switch in between
        conn.send_frame(first if index == 0 else text_frame(b"n" * (1 << 20)))
    assert conn.close_code == CLOSE_POLICY_VIOLATION
    try:
        frames = server_frames(read_to_the_end(theirs))
    finally:
        ours.close()
        theirs.close()
    assert [opcode for opcode, _ in frames] == [OP_TEXT, OP_CLOSE]
    assert frames[0][1] == b"1" * (1 << 20)
    assert int.from_bytes(frames[1][1][:2], "big") == CLOSE_POLICY_VIOLATION


def test_clients_behind_are_closed_once_the_process_holds_too_much_for_them():
    """Each client's queue is bounded (OUTBOX_MAX_BYTES), but one user's many connections
    asking for history and never reading held that much each: past the process's total,
    a client with more than its share queued is closed; one that keeps up is not."""
    config = {**CONNECTION_CONFIG, "OUTBOX_TOTAL_MAX_BYTES": 2 << 20, "SOCKET_SEND_BUFFER_BYTES": 4096}
    pairs = [gevent.socket.socketpair() for _ in range(3)]
    hoarder, other_hoarder, light = (Connection(ours, config, "test") for ours, _ in pairs)
    baseline = Connection.queued_in_process
    big = text_frame(b"h" * (600 << 10))
    try:
        for _ in range(2):  # 2.4 MB asked for by the two: within each one's own bound
            hoarder.send_frame(big)
            other_hoarder.send_frame(big)
        light.send_frame(text_frame(b"small"))
        assert hoarder.close_code is None
        assert other_hoarder.close_code == CLOSE_POLICY_VIOLATION  # the one that went past
        light.send_frame(text_frame(b"more"))
        assert light.close_code is None
        assert Connection.queued_in_process - baseline == hoarder.outbox_bytes + other_hoarder.outbox_bytes
    finally:
        for conn in (hoarder, other_hoarder, light):
            conn.abort()
            conn.finish()
        for _, theirs in pairs:
            theirs.close()
    assert Connection.queued_in_process == baseline


def test_the_process_total_counts_a_frame_until_the_kernel_has_taken_it():
    """Clients that each ask for one large answer and read nothing: the flusher begins
    writing each answer at once, and a frame that stopped counting then let 800 such
    connections hold 1.5 GB past OUTBOX_TOTAL_MAX_BYTES."""
    config = {**CONNECTION_CONFIG, "OUTBOX_TOTAL_MAX_BYTES": 2 << 20, "SOCKET_SEND_BUFFER_BYTES": 4096}
    pairs = [gevent.socket.socketpair() for _ in range(3)]
    conns = [Connection(ours, config, "test") for ours, _ in pairs]
    baseline = Connection.queued_in_process
    answer = text_frame(b"h" * (900 << 10))
    try:
        for conn in conns:
            conn.send_frame(answer)
            gevent.idle()  # its flusher is now in the write, waiting for the client to read
        assert [conn.close_code for conn in conns] == [None, None, CLOSE_POLICY_VIOLATION]
        assert Connection.queued_in_process - baseline == sum(conn.outbox_bytes for conn in conns)
    finally:
        for conn in conns:
            conn.abort()
            conn.finish()
        for _, theirs in pairs:
            theirs.close()
    assert Connection.queued_in_process == baseline


class CountingSocket:
    """A socket whose send() calls are counted."""

    def __init__(self, sock) -> None:
        self.sock, self.sends = sock, 0

    def send(self, data) -> int:
        self.sends += 1
        return self.sock.send(data)

    def __getattr__(self, name):
        return getattr(self.sock, name)  # recv, fileno: the reading side as it is


def test_frames_sent_inside_coalesced_reach_each_client_in_order_in_one_write_at_its_end():
    """A fan-out inside `coalesced()` writes nothing until the block ends, then each
    client's frames, joined, with one send(); an inner block leaves that to the outer."""
    pairs = [gevent.socket.socketpair() for _ in range(2)]
    first, second = (Connection(ours, CONNECTION_CONFIG, "test") for ours, _ in pairs)
    for conn in (first, second):
        conn.raw = CountingSocket(conn.raw)
    try:
        with coalesced():
            for n in range(3):
                first.send_frame(text_frame(f"first {n}".encode()))
                with coalesced():
                    second.send_frame(text_frame(f"second {n}".encode()))
            assert (first.raw.sends, second.raw.sends) == (0, 0)
        assert (first.raw.sends, second.raw.sends) == (1, 1)
        first.close(1000)
        second.close(1000)
        received = [server_frames(read_to_the_end(theirs)) for _, theirs in pairs]
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()
    assert [payload for _, payload in received[0][:3]] == [b"first 0", b"first 1", b"first 2"]
    assert [payload for _, payload in received[1][:3]] == [b"second 0", b"second 1", b"second 2"]
    assert [opcode for opcode, _ in received[0]] == [OP_TEXT] * 3 + [OP_CLOSE]


def test_a_client_closed_inside_coalesced_gets_the_frames_sent_before_the_close_then_the_close():
    """Closing starts inside the block: what was sent before it still goes first, what
    is sent after it is dropped, and the close frame comes last."""
    ours, theirs = gevent.socket.socketpair()
    conn = Connection(ours, CONNECTION_CONFIG, "test")
    try:
        with coalesced():
            conn.send_frame(text_frame(b"before"))
            conn.close(1000)
            conn.send_frame(text_frame(b"after"))
        frames = server_frames(read_to_the_end(theirs))
    finally:
        ours.close()
        theirs.close()
    assert [(opcode, payload[:6]) for opcode, payload in frames] == [(OP_TEXT, b"before"), (OP_CLOSE, frames[1][1][:6])]


def read_frames(sock, count: int) -> list[tuple[int, bytes]]:
    """The first `count` frames the client reads (more may follow)."""
    received = bytearray()
    with gevent.Timeout(10):
        while True:
            frames = server_frames(bytes(received)) if received else []
            if len(frames) >= count:
                return frames
            received += sock.recv(1 << 16)


def burst(*payloads: bytes) -> bytes:
    """Client frames sent at once: the server reads them in one turn."""
    return b"".join(client_frame(OP_TEXT, payload) for payload in payloads)


def test_the_answers_to_a_burst_read_in_one_turn_go_out_together_in_order():
    """Twenty joins at once, each answered with a few frames, cost sixty send() calls:
    from the burst's second message on, the answers are held and written joined when the
    turn ends. The first message's go at once (a lone message is not held)."""
    ours, theirs = gevent.socket.socketpair()
    conn = Connection(ours, CONNECTION_CONFIG, "test")
    conn.raw = CountingSocket(conn.raw)
    done = Event()

    def answer(conn, message) -> None:
        conn.send_frame(text_frame(f"ack {message}".encode()))
        conn.send_frame(text_frame(f"data {message}".encode()))
        if message == "5":
            done.set()

    try:
        conn.watch(answer, lambda conn: None)
        theirs.sendall(burst(b"1", b"2", b"3", b"4", b"5"))
        frames = read_frames(theirs, 10)
        done.wait(10)
    finally:
        conn.abort()
        conn.finish()
        theirs.close()
    expected = [f"{kind} {n}".encode() for n in range(1, 6) for kind in ("ack", "data")]
    assert [payload for _, payload in frames] == expected
    assert conn.raw.sends == 3


def test_a_turn_that_waits_writes_what_it_held_first_and_others_frames_keep_their_place():
    """A message whose handling waits (a database read, a commit) must not keep the answers
    before it from the client until it is done: the client reads them while it waits. A
    frame another greenlet sends meanwhile comes after them, before what follows."""
    ours, theirs = gevent.socket.socketpair()
    conn = Connection(ours, CONNECTION_CONFIG, "test")
    released = Event()

    def answer(conn, message) -> None:
        conn.send_frame(text_frame(f"answer {message}".encode()))
        if message == "2":
            gevent.spawn(conn.send_frame, text_frame(b"from elsewhere"))
            released.wait(10)  # the client must have read the answers so far by now
            conn.send_frame(text_frame(b"after the wait"))

    try:
        conn.watch(answer, lambda conn: None)
        theirs.sendall(burst(b"1", b"2", b"3"))
        before = read_frames(theirs, 3)
        released.set()
        after = read_frames(theirs, 2)
    finally:
        conn.abort()
        conn.finish()
        theirs.close()
    assert [payload for _, payload in before] == [b"answer 1", b"answer 2", b"from elsewhere"]
    assert [payload for _, payload in after] == [b"after the wait", b"answer 3"]


def test_a_client_closed_during_a_held_turn_gets_the_held_frames_then_the_close():
    ours, theirs = gevent.socket.socketpair()
    conn = Connection(ours, CONNECTION_CONFIG, "test")

    def answer(conn, message) -> None:
        conn.send_frame(text_frame(f"answer {message}".encode()))
        if message == "2":
            conn.close(1000)

    try:
        conn.watch(answer, lambda conn: None)
        theirs.sendall(burst(b"1", b"2", b"3"))
        frames = server_frames(read_to_the_end(theirs))
    finally:
        conn.abort()
        conn.finish()
        theirs.close()
    assert [opcode for opcode, _ in frames] == [OP_TEXT, OP_TEXT, OP_CLOSE]
    assert [payload for _, payload in frames[:2]] == [b"answer 1", b"answer 2"]
