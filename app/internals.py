"""Every private internal of flask-sock, simple-websocket, gunicorn and gevent we rely on, and the code touching them.

tests/test_internals.py checks each of them, and fails if the source of any function
listed in FINGERPRINTS changes (a version bump): read the entry, check that the reliance
still holds, then record the new fingerprint.

flask-sock (`Sock.route`)
    The route wrapper builds `simple_websocket.Server(request.environ,
    **app.config["SOCK_SERVER_OPTIONS"])`, calls the view with it, then `ws.close()`
    (exceptions swallowed), then returns a `WebSocketResponse` class defined per request
    whose `__call__` closes over `ws`. A class is always in a reference cycle, so what
    `ws` holds waits for the garbage collector unless dropped (`take_over`). In gunicorn
    mode that `__call__` raises StopIteration.

simple-websocket (`Base.__init__`, `Base.close`, `Server.__init__`, `Server.handshake`)
    The handshake (the 101) is done and written inside `Server.__init__`, from the
    `HTTP_*` keys of the WSGI environ (so removing `HTTP_SEC_WEBSOCKET_EXTENSIONS` from
    the environ refuses permessage-deflate); afterwards it starts
    `thread_class(target=...)` and renames it through `.name` (`server_options` gives a
    class whose start() does nothing: our read loop reads). `ws.sock` is the socket it
    found in the environ (`gunicorn.socket`); with `ws.connected` False, `close()` sends
    nothing. Its `environ`, `ws`, `sock`, `event`, `thread` attributes are all it holds.

gunicorn (`Unreader.take_buffered`, `Body.__init__`, `AsyncWorker.handle`)
    `environ["wsgi.input"]` is a `Body` whose `.reader.unreader` holds what the parser
    read past the request: frames a client sent before the 101 (`pipelined_bytes`).
    StopIteration from the application ends the request with nothing written, and the
    worker then closes its socket object: the session keeps a dup() of it.

gevent
    A gevent socket's `_sock` is the OS socket under it, non-blocking (`os_socket`), and
    `get_hub().loop.io(fd, 1)` a libev read watcher with start(callback), stop(), close()
    (`read_watcher`): no greenlet waits for an idle connection.
"""

from __future__ import annotations

import gevent

# The first 16 hex digits of the sha256 of the source of each function whose internals are relied on (see above).
FINGERPRINTS = {
    "flask_sock:Sock.route": "eb10bed28858e2f1",
    "simple_websocket.ws:Base.__init__": "25f57ef0b5f87780",
    "simple_websocket.ws:Base.close": "c3b710ade5278edb",
    "simple_websocket.ws:Server.__init__": "daea66f7fe24d320",
    "simple_websocket.ws:Server.handshake": "e5b2277ee84d571e",
    "gunicorn.http.unreader:Unreader.take_buffered": "89cef5e60e6f09e1",
    "gunicorn.http.body:Body.__init__": "db5ff256b7b94ba1",
    "gunicorn.workers.base_async:AsyncWorker.handle": "6eb3b127e6ba7e84",
}


class NoReaderThread:
    """Stands in for simple-websocket's reader thread: our read loop reads instead."""

    def __init__(self, target=None) -> None:
        self.name = "chat-reader"

    def start(self) -> None:
        pass


def server_options() -> dict:
    """flask-sock's SOCK_SERVER_OPTIONS: simple-websocket only does the handshake."""
    return {"thread_class": NoReaderThread, "ping_interval": None}


def take_over(ws):
    """The socket of a simple-websocket Server after the handshake, as a socket of our own.

    Everything else `ws` holds (the WSGI environ, wsproto's and h11's state) is dropped now, by
    reference counting: left to the garbage collector, many connects at once pause the loop.
    """
    sock = ws.sock.dup()
    ws.connected = False  # simple-websocket's own close() now does nothing
    ws.environ = ws.ws = ws.sock = ws.event = ws.thread = None
    return sock


def pipelined_bytes(environ: dict) -> bytes:
    """The bytes the client sent right behind its upgrade request, read by gunicorn's parser with it.

    Frames of a client that did not wait for the 101 (some send their `auth` at once): lost otherwise.
    """
    reader = getattr(environ.get("wsgi.input"), "reader", None)
    take_buffered = getattr(getattr(reader, "unreader", None), "take_buffered", None)
    return take_buffered() if take_buffered is not None else b""


def os_socket(sock):
    """The non-blocking OS socket under a gevent socket: its send and recv never yield."""
    return sock._sock


def read_watcher(fileno: int):
    """A libev watcher that calls back when `fileno` is readable (start(callback))."""
    return gevent.get_hub().loop.io(fileno, 1)  # 1: readable
