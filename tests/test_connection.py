"""A connection's sending side over a real socket pair: what the client reads when the
server gives up on a client that reads too slowly."""

from __future__ import annotations

import gevent
import gevent.socket

from app.connection import Connection
from app.wsframe import CLOSE_POLICY_VIOLATION, OP_CLOSE, OP_TEXT, text_frame
from tests.support.connection_config import CONNECTION_CONFIG
from tests.support.frames import server_frames


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
