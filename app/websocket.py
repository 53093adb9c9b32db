"""The WebSocket endpoint: handshake checks, then a thin receive → dispatch → send loop."""

from __future__ import annotations

import base64
import functools
import logging
import time
from datetime import UTC, datetime

import gevent
from flask import Blueprint, Response, current_app, g, request
from flask_sock import Sock
from wsproto.utilities import RemoteProtocolError

from . import internals, protocol, read_state
from .connection import Connection
from .errors import ChatError, RateLimited, Unauthorized
from .handlers import dispatch
from .membership import conversation_items
from .metrics import AUTH_REFUSED, CONNECTIONS, FRAMES_IN
from .noyield import not_yielding
from .runners import run_soon
from .runtime import ChatRuntime, get_runtime, shutting_down
from .tokens import Identity, token_from_request, verify_configured
from .wsframe import CLOSE_GOING_AWAY, CLOSE_TRY_AGAIN_LATER, CLOSE_UNAUTHORIZED

log = logging.getLogger(__name__)

bp = Blueprint("websocket", __name__)
sock = Sock()


def server_options(config: dict) -> dict:
    # simple-websocket only does the handshake; frames are ours (app/wscore.py).
    return internals.server_options()


@bp.before_app_request
def check_handshake() -> Response | None:
    """Refuse a bad token before the upgrade (401); note a good one for the handler."""
    if not request.environ.get("HTTP_UPGRADE", "").lower() == "websocket":
        return None
    refusal = malformed_upgrade(request.environ)
    if refusal is not None:
        return refusal
    # No permessage-deflate: its per-connection compressor costs ~300 KB of memory and
    # CPU on every frame, and frames are encoded once for all receivers.
    request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
    if shutting_down():
        # Clients reconnect elsewhere (or here, after the restart).
        return Response("shutting down\n", status=503, mimetype="text/plain")
    try:
        get_runtime()  # made by the first connection, and it needs the database
    except ChatError as exc:
        # Before the 101, so that the client reads an HTTP answer, not one written into
        # its WebSocket stream, and tries again later.
        return Response(f"unavailable: {exc.message}\n", status=503, mimetype="text/plain")
    token = token_from_request(request.headers, request.args)
    g.identity = None
    if token is None:
        return None
    try:
        g.identity = verify_configured(token, current_app.config)
    except Unauthorized as exc:
        AUTH_REFUSED.inc()
        log.info("refused handshake from %s: %s", request.remote_addr, exc.message)
        return Response(f"unauthorized: {exc.message}\n", status=401, mimetype="text/plain")
    return None


def malformed_upgrade(environ: dict) -> Response | None:
    """A 4xx answer for an upgrade request that breaks RFC 6455's rules, else None.

    (wsproto, under simple-websocket, raised on some of them: a 500 and an error
    traceback in the log, which anyone could fill that way.)
    """
    if environ.get("SERVER_PROTOCOL") == "HTTP/1.0":
        return _bad_upgrade("WebSocket needs HTTP/1.1 (RFC 6455 §4.1)")
    if environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip() != "13":
        return Response(
            "unsupported WebSocket version: this server speaks version 13\n",
            status=426,
            mimetype="text/plain",
            headers={"Sec-WebSocket-Version": "13"},
        )
    connection = {token.strip().lower() for token in environ.get("HTTP_CONNECTION", "").split(",")}
    if "upgrade" not in connection:
        return _bad_upgrade("Connection: Upgrade missing")
    try:
        key_bytes = len(base64.b64decode(environ.get("HTTP_SEC_WEBSOCKET_KEY", ""), validate=True))
    except ValueError:  # binascii.Error, or a key that is not ASCII
        key_bytes = 0
    if key_bytes != 16:
        return _bad_upgrade("Sec-WebSocket-Key missing or not 16 bytes in base64")
    return None


def _bad_upgrade(problem: str) -> Response:
    log.info("refused a malformed upgrade from %s: %s", request.remote_addr, problem)
    return Response(f"bad WebSocket handshake: {problem}\n", status=400, mimetype="text/plain")


@bp.app_errorhandler(RemoteProtocolError)
def handshake_refused(exc: RemoteProtocolError) -> Response:
    """Whatever else wsproto finds wrong with a handshake is the client's error too."""
    return _bad_upgrade(str(exc))


def chat_socket(ws) -> None:
    """Take the socket over from the HTTP request and serve it in a greenlet of its own.

    The request's greenlet, with gunicorn's parser, the WSGI environ, Flask's request
    context and simple-websocket's protocol state, ends right after the handshake: held
    for the connection's whole life they were most of an idle connection's memory.
    """
    rt = get_runtime()
    conn = Connection(internals.take_over(ws), rt.config, request.remote_addr or "?")
    conn.legacy = request.path == "/"
    conn.absorb_early(internals.pipelined_bytes(request.environ))
    rt.connections.add(conn)
    CONNECTIONS.inc()
    run_soon(run_session, rt, conn, g.get("identity"))


def upgrade_list_as_websocket(wsgi_app):
    """WSGI middleware: an `Upgrade` header that lists WebSocket among other protocols
    (RFC 7230 §6.7: `websocket, h2c`, or the header twice) asks for WebSocket.

    werkzeug routes a request to a WebSocket route only when the header is exactly
    `websocket`, before any Flask hook runs; such a request got its HTML 400.
    """

    def app(environ, start_response):
        upgrade = environ.get("HTTP_UPGRADE")
        if upgrade and "," in upgrade and "websocket" in (p.strip().lower() for p in upgrade.split(",")):
            environ["HTTP_UPGRADE"] = "websocket"
        return wsgi_app(environ, start_response)

    return app


def run_session(rt: ChatRuntime, conn: Connection, identity: Identity | None) -> None:
    """Greet an authenticated client, or wait for its `auth`; from then on the
    connection is served by events (see Transport.watch) and this greenlet ends."""
    end = functools.partial(end_connection, rt)
    try:
        if rt.shutting_down:
            conn.close(CLOSE_GOING_AWAY, "server shutting down")
            conn.watch(ignore_message, end)  # until the client's close frame
        elif identity is not None:
            started = start_session(rt, conn, identity)
            conn.watch(functools.partial(serve_message, rt) if started else ignore_message, end)
        else:
            FirstFrameAuth(rt, conn).watch()
        return
    except Exception:
        log.exception("starting the session of %r failed", conn)
    end_connection(rt, conn)


def ignore_message(conn: Connection, raw: str | bytes) -> None:
    """A message that comes while the connection closes: only the close frame matters."""


def end_connection(rt: ChatRuntime, conn: Connection) -> None:
    """The client went (or was closed): leave its rooms, then close the socket."""
    try:
        end_session(rt, conn)
    finally:
        conn.finish()
        rt.connections.discard(conn)
        CONNECTIONS.dec()


sock.route("/ws", bp=bp)(chat_socket)
sock.route("/", bp=bp, endpoint="chat_socket_root")(chat_socket)


class FirstFrameAuth:
    """An unauthenticated connection must send `auth` first, within the timeout, or 4001."""

    __slots__ = ("rt", "conn", "timer")

    def __init__(self, rt: ChatRuntime, conn: Connection) -> None:
        self.rt = rt
        self.conn = conn
        timeout = rt.config["AUTH_TIMEOUT_SECONDS"]
        self.timer = gevent.spawn_later(timeout, self.refuse, conn, "authentication timed out")

    def watch(self) -> None:
        self.conn.watch(self.on_message, self.on_end)

    def on_message(self, conn: Connection, raw: str | bytes) -> None:
        if conn.close_code is not None:
            return  # refused already: only the close frame matters now
        try:
            command = protocol.parse_frame(raw, self.rt.limits)
            if command.type != "auth":
                raise Unauthorized('authenticate first: send {"type":"auth","token":...}')
            identity = verify_configured(command.token, self.rt.config)
        except ChatError as exc:
            self.timer.kill(block=False)
            self.refuse(conn, exc.message)
            return
        self.timer.kill(block=False)
        if start_session(self.rt, conn, identity):
            conn.on_message = functools.partial(serve_message, self.rt)

    def on_end(self, conn: Connection) -> None:
        self.timer.kill(block=False)
        end_connection(self.rt, conn)

    def refuse(self, conn: Connection, reason: str) -> None:
        AUTH_REFUSED.inc()
        log.info("refused %r: %s", conn, reason)
        conn.send_error("unauthorized", reason)
        conn.close(CLOSE_UNAUTHORIZED, reason[:120])


def start_session(rt: ChatRuntime, conn: Connection, identity: Identity) -> bool:
    """Read the user's rooms and conversations, list the connection in them, and greet it.

    False when the database cannot list them: the connection is closed with 1013 instead.
    """
    conn.user_id = identity.user_id
    conn.token_expires_at = identity.expires_at
    rt.hub.begin_registration(conn)  # DMs committed after the listing's snapshot are kept
    try:
        # Counted before the connection is listed in its rooms: from then on, nothing
        # may yield before `welcome` (it comes before any live message).
        session, partners, room_states, dm_states = rt.welcome_reads.read(identity)
        conn.username = session.username
        rt.known_users.add(identity.user_id)
    except ChatError as exc:
        # A `welcome` without the user's rooms would say they are in none, and a client
        # would empty its list (and chatting needs the database anyway). 1013 "try again
        # later": every client reconnects on a close other than 1000, the shipped one
        # after 5 s (LEGACY-CLIENT.md), ours with its backoff.
        rt.hub.remove_user_connection(conn)
        log.warning("closing %r with 1013: its rooms cannot be listed (%s)", conn, exc.message)
        conn.close(CLOSE_TRY_AGAIN_LATER, "database unavailable: try again later")
        return False
    # From the listing in its rooms on, live messages come: `welcome` must go out first.
    with not_yielding("a connection's listing and its welcome"):
        rt.hub.add_user_connection(conn, session.threads)
        rooms = rt.membership.connected(conn, session.rooms)
        rooms = read_state.add_counts(rooms, room_states, "room")
        conversations = read_state.add_counts(conversation_items(partners), dm_states, "userId")
        conn.send(protocol.welcome_frame(conn.user_id, conn.username, datetime.now(UTC), rooms, conversations))
    log.info("user %s (%d) connected from %s as %r", conn.username, conn.user_id, conn.peer, conn)
    rt.users_online.connected(conn.user_id)
    return True


def serve_message(rt: ChatRuntime, conn: Connection, raw: str | bytes) -> None:
    """One message of an authenticated client: rate limit, parse, dispatch, answer errors."""
    FRAMES_IN.value += 1
    if conn.close_code is not None:
        return  # closing: only the client's close frame matters now
    try:
        if not conn.rate.allow():
            raise RateLimited("too many frames: slow down")
        dispatch(rt, conn, protocol.parse_frame(raw, rt.limits))
    except ChatError as exc:
        conn.send_error(exc.code, exc.message, protocol.request_reference(raw))
    except Exception:
        log.exception("handling a frame of %r failed", conn)
        conn.send_error("internal", "internal server error", protocol.request_reference(raw))


def end_session(rt: ChatRuntime, conn: Connection) -> None:
    started = time.monotonic()
    try:
        rt.membership.disconnected(conn)
    except Exception:
        log.exception("unlisting %r from its rooms failed", conn)
    if conn.user_id:
        rt.hub.remove_user_connection(conn)
        rt.users_online.disconnected(conn.user_id)
        log.info(
            "user %s (%d) disconnected (%r, %.0f ms cleanup)",
            conn.username,
            conn.user_id,
            conn,
            (time.monotonic() - started) * 1000,
        )
