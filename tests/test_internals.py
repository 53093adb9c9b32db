"""The private internals of flask-sock, simple-websocket, gunicorn and gevent that the
server relies on (app/internals.py): each still there and behaving as relied on, and the
source of each function read for it unchanged."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import io

import gevent
import gevent.event
import gevent.socket
import pytest
import simple_websocket
from gunicorn.http.body import Body, LengthReader
from gunicorn.http.unreader import Unreader

from app import internals


def source_fingerprint(key: str) -> str:
    module, qualname = key.split(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


@pytest.mark.parametrize("key", internals.FINGERPRINTS)
def test_the_source_relied_on_is_unchanged(key):
    assert source_fingerprint(key) == internals.FINGERPRINTS[key], (
        f"{key} changed: check what app/internals.py says of it still holds, then record the new fingerprint"
    )


class Buffered(Unreader):
    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.buf = io.BytesIO(data)

    def chunk(self, size_hint=None) -> bytes:
        return b""


def test_bytes_read_past_the_request_are_taken_from_gunicorns_body():
    unreader = Buffered(b"frames sent before the 101")
    environ = {"wsgi.input": Body(LengthReader(unreader, 0))}
    assert internals.pipelined_bytes(environ) == b"frames sent before the 101"
    assert internals.pipelined_bytes(environ) == b""


def test_simple_websocket_server_takes_the_options_and_attributes_relied_on():
    parameters = inspect.signature(simple_websocket.Server.__init__).parameters
    assert {"thread_class", "ping_interval"} <= set(parameters)
    thread = internals.NoReaderThread(target=print)
    thread.name = thread.name.replace("x", "y")  # what Base.__init__ does with it
    thread.start()


def test_take_over_leaves_the_socket_ours_and_the_server_holding_nothing():
    ours, theirs = gevent.socket.socketpair()
    ws = simple_websocket.ws.Base.__new__(simple_websocket.Server)
    ws.sock, ws.connected, ws.environ, ws.ws, ws.event, ws.thread = ours, True, {}, object(), object(), object()
    ws.close_reason, ws.close_message = 1000, None
    sock = internals.take_over(ws)
    try:
        assert (ws.sock, ws.environ, ws.ws, ws.event, ws.thread) == (None,) * 5
        with pytest.raises(simple_websocket.ConnectionClosed):
            ws.close()  # sends nothing once not connected
        ours.close()  # what gunicorn does with its socket object
        sock.sendall(b"still ours")
        assert theirs.recv(64) == b"still ours"
    finally:
        sock.close()
        theirs.close()


def test_gevent_sockets_expose_the_os_socket_and_a_read_watcher():
    ours, theirs = gevent.socket.socketpair()
    try:
        raw = internals.os_socket(ours)
        assert raw.gettimeout() == 0.0  # non-blocking: never yields
        woken = gevent.event.Event()
        watcher = internals.read_watcher(raw.fileno())
        watcher.start(woken.set)
        theirs.sendall(b"x")
        assert woken.wait(5)
        watcher.stop()
        watcher.close()
    finally:
        ours.close()
        theirs.close()
