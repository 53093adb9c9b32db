"""WebSocket clients of the chat that read frames as dicts, and the steps every test takes with them."""

from __future__ import annotations

import json
import time

import pytest
import websocket

from tests.support.asyncapi import check_client_frame, check_server_frame
from tests.support.identities import make_token, new_user_id
from tests.support.servers import Server


class Client:
    """A WebSocket client that reads frames as dicts and waits for the ones it wants."""

    def __init__(self, ws: websocket.WebSocket) -> None:
        self.ws = ws
        self.seen: list[dict] = []  # frames read but not yet asked for

    @classmethod
    def connect(cls, base_url: str, token: str | None = None, how: str = "query", path: str = "/ws", **kw) -> Client:
        headers = []
        url = base_url + path
        if token and how == "query":
            url += f"?token={token}"
        elif token and how == "header":
            headers.append(f"Authorization: Bearer {token}")
        ws = websocket.create_connection(url, header=headers, timeout=10, **kw)
        client = cls(ws)
        if token and how == "frame":
            client.send({"type": "auth", "token": token})
        return client

    def send(self, frame: dict | str) -> None:
        """Send a frame: a dict must match docs/asyncapi.yaml; a str goes out unchecked (the
        way to send a frame meant to be refused, see tests/support/asyncapi.py)."""
        self.ws.send(frame if isinstance(frame, str) else json.dumps(check_client_frame(frame)))

    def recv_any(self, timeout: float = 10.0) -> dict:
        if self.seen:
            return self.seen.pop(0)
        self.ws.settimeout(timeout)
        return check_server_frame(json.loads(self.ws.recv()))

    def expect(self, kind: str, timeout: float = 10.0, **match) -> dict:
        """The first frame of this type (and matching fields); others are kept for later."""
        for index, frame in enumerate(self.seen):
            if frame.get("type") == kind and _matches(frame, match):
                return self.seen.pop(index)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {kind} {match} within {timeout}s; seen {self.seen[-5:]}")
            self.ws.settimeout(remaining)
            try:
                frame = check_server_frame(json.loads(self.ws.recv()))
            except websocket.WebSocketTimeoutException:
                continue
            if frame.get("type") == kind and _matches(frame, match):
                return frame
            self.seen.append(frame)

    def expect_error(self, code: str, timeout: float = 10.0) -> dict:
        frame = self.expect("error", timeout)
        assert frame["code"] == code, frame
        assert frame["data"]["message"] == frame["message"] and frame["data"]["code"] == code
        assert frame["message"]
        return frame

    def nothing_more(self, kind: str, wait: float = 0.5) -> None:
        """Assert no frame of this type arrives within `wait` seconds."""
        with pytest.raises(TimeoutError):
            self.expect(kind, timeout=wait)

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass


def _matches(frame: dict, match: dict) -> bool:
    for key, value in match.items():
        holder = frame if key in frame else frame.get("data") or {}
        if not isinstance(holder, dict) or holder.get(key) != value:
            return False
    return True


def join(client: Client, room: str, **extra) -> dict:
    """Join `room` (with `extra` fields such as `since`) and return the join_ack."""
    client.send({"type": "join", "room": room, **extra})
    return client.expect("join_ack", room=room)


def connect_to(srv: Server, user_id: int | None = None) -> Client:
    """A client of `srv` with its welcome read: a new user's unless `user_id` is given.

    For tests that start servers of their own (the `connect` fixture serves the shared one).
    """
    user_id = user_id or new_user_id()
    client = Client.connect(srv.url, make_token(user_id, f"user{user_id}"))
    client.expect("welcome")
    client.user_id, client.username = user_id, f"user{user_id}"
    return client


def join_new_clients(srv: Server, room: str, count: int) -> list[Client]:
    """`count` new users' clients of `srv`, each joined to `room`."""
    clients = [connect_to(srv) for _ in range(count)]
    for client in clients:
        join(client, room)
    return clients


def assert_closed_with(client: Client, code: int) -> None:
    """Read on until the server's close frame, and assert its close code."""
    client.ws.settimeout(5)
    while True:
        opcode, data = client.ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            assert int.from_bytes(data[:2], "big") == code
            return
