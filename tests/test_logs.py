"""No token reaches the log: the server's whole output, read after real requests."""

from __future__ import annotations

import io
import logging
import socket
from collections.abc import Iterator

import pytest

from app import redact
from tests.support.clients import Client
from tests.support.identities import make_token, new_user_id
from tests.support.servers import Server
from tests.support.waiting import wait_for

# Each test starts its own gunicorn to read what it logs: seconds each.
pytestmark = pytest.mark.slow

# Request lines gunicorn refuses, and logs whole at WARNING: "{token}" is where a token goes.
MALFORMED_LINES = {
    "double space": "GET /ws?token={token}  HTTP/1.1",
    "tab": "GET /ws?token={token}\tHTTP/1.1",
    "control byte": "GET /ws?token={token}\x01 HTTP/1.1",
    "bare JWT in the path": "GET /{token}\x7f HTTP/1.1",
}


@pytest.fixture(scope="module")
def logged_server(database_url: str) -> Iterator[Server]:
    """A server of its own, access log on, so that its log holds only these tests' lines."""
    srv = Server(database_url, ACCESS_LOG="-").start()
    yield srv
    srv.stop()


def secret_parts(token: str) -> list[str]:
    """What must never be logged: the claims and the signature (the header is the same in
    every token)."""
    _, payload, signature = token.split(".")
    return [payload, signature]


def send_raw(server: Server, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(data)
        return sock.recv(4096)


@pytest.mark.parametrize("kind", MALFORMED_LINES)
def test_a_malformed_request_line_is_logged_without_its_token(logged_server, kind):
    token = make_token(new_user_id(), "logged")
    logged_before = len(logged_server.log())
    line = MALFORMED_LINES[kind].format(token=token)
    answer = send_raw(logged_server, f"{line}\r\nHost: chat\r\n\r\n".encode("latin-1"))
    assert answer.startswith(b"HTTP/1.1 400"), answer
    log = logged_server.log()[logged_before:]  # (written before the answer was sent)
    assert "Invalid request" in log
    for part in secret_parts(token):
        assert part not in log


@pytest.mark.parametrize("how", ["query", "header"])
def test_an_upgrade_with_a_token_is_logged_without_it(logged_server, how):
    user_id = new_user_id()
    token = make_token(user_id, "logged")
    logged_before = len(logged_server.log())
    client = Client.connect(logged_server.url, token, how=how)
    client.expect("welcome")
    client.close()
    log = wait_for(
        lambda: f"({user_id}) disconnected" in (text := logged_server.log()[logged_before:]) and text,
        5,
        "the end of the connection logged",
    )
    for part in secret_parts(token):
        assert part not in log


def test_a_plain_request_with_a_token_is_logged_without_it(logged_server):
    token = make_token(new_user_id(), "logged")
    logged_before = len(logged_server.log())
    answer = send_raw(logged_server, f"GET /healthz?token={token} HTTP/1.1\r\nHost: chat\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 200"), answer
    log = wait_for(
        lambda: "/healthz" in (text := logged_server.log()[logged_before:]) and text, 5, "the access log line"
    )
    for part in secret_parts(token):
        assert part not in log


def test_every_record_is_redacted_however_it_carries_the_token():
    """Arguments, the message itself, a traceback, a header: whatever the logger or handler."""
    token = make_token(new_user_id(), "logged")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("test_logs.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    redact.install()
    redact.install()  # (once is enough; twice changes nothing)
    try:
        logger.warning("refused %s", f"/ws?token={token}&x=1")
        logger.warning(f"Authorization: Bearer {token[:20]}")  # not even shaped like a JWT
        logger.warning("%(line)r", {"line": f"GET /?access_token={token}\tHTTP/1.1"})
        try:
            raise ValueError(f"bad token {token}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    for part in [*secret_parts(token), token[:20]]:
        assert part not in out
    assert "token=[redacted]&x=1" in out and "Bearer [redacted]" in out and "ValueError: bad token" in out
