"""A room replayed to one connection (Memberships.replay), in this process, over a real
database and a real socket pair."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import gevent.socket
import pytest

from app import db, store
from app.connection import Connection
from app.hub import Hub
from app.membership import Memberships
from tests.support.connection_config import CONNECTION_CONFIG
from tests.support.databases import sql


def test_a_replay_stops_reading_once_its_client_is_gone(fresh_database, monkeypatch):
    """Nothing reads the socket while a replay runs: that the client left shows as a
    failed send, and the rest of the room's history is not read for nobody."""
    db.make_cooperative()
    url = fresh_database()
    sql(url, "INSERT INTO rooms (name, last_seq) VALUES ('long', 2000)")
    sql(
        url,
        """INSERT INTO messages (from_user, room, content, seq, timestamp)
           SELECT 1, 'long', repeat('x', 200), g, now() FROM generate_series(1, 2000) g""",
    )
    pages: list[int] = []
    channel_after = store.channel_after

    def counted(cur, channel, after_id, below, limit, **bounds):
        pages.append(after_id)
        return channel_after(cur, channel, after_id, below, limit, **bounds)

    monkeypatch.setattr(store, "channel_after", counted)
    ours, theirs = gevent.socket.socketpair()
    conn = Connection(ours, CONNECTION_CONFIG, "test")
    theirs.close()  # the client went away right after asking
    pool = db.Pool(url, size=1)
    try:
        hub = Hub(fetch=lambda *args: [], gap_wait_seconds=1.0)
        membership = Memberships(hub, SimpleNamespace(), pool, join_ack_max_users=10, replay_page_size=100)
        conn.replay_buffers["long"] = []
        membership.replay(conn, "long", since=0)
    finally:
        pool.close()
        ours.close()
    assert conn.peer_gone
    assert len(pages) == 1, f"read {len(pages)} pages of 20 for a client that was gone"


def test_a_replay_that_fails_unexpectedly_unlists_the_connection(fresh_database, monkeypatch):
    """Not only a database error: whatever stops a replay half-way takes the connection
    out of the room (the membership stays: the client joins again with its `since`), or
    it would stay listed with the room's live messages held back for good."""
    db.make_cooperative()
    url = fresh_database()
    sql(url, "INSERT INTO rooms (name, last_seq) VALUES ('long', 300)")
    sql(
        url,
        "INSERT INTO messages (from_user, room, content, seq) SELECT 1, 'long', 'x', g FROM generate_series(1, 300) g",
    )
    channel_after = store.channel_after

    def failing_on_the_second_page(cur, channel, after_id, below, limit, **bounds):
        if after_id:
            raise RuntimeError("a bug")
        return channel_after(cur, channel, after_id, below, limit, **bounds)

    monkeypatch.setattr(store, "channel_after", failing_on_the_second_page)
    ours, theirs = gevent.socket.socketpair()
    conn = Connection(ours, CONNECTION_CONFIG, "test")
    conn.user_id, conn.username = 1, "reader"
    tended: list[tuple[str, int, str]] = []
    hub = Hub(fetch=lambda *args: [], gap_wait_seconds=1.0)
    presence = SimpleNamespace(changing=lambda room, user: contextlib.nullcontext(), tend_soon=tended.extend)
    pool = db.Pool(url, size=1)
    try:
        membership = Memberships(hub, presence, pool, join_ack_max_users=10, replay_page_size=100)
        conn.rooms["long"] = hub.join_room(conn, "long", 300, 300)
        conn.replay_buffers["long"] = []
        with pytest.raises(RuntimeError):
            membership.replay(conn, "long", since=0)
    finally:
        pool.close()
        ours.close()
        theirs.close()
    assert "long" not in conn.rooms and "long" not in conn.replay_buffers
    assert "long" not in hub.members_by_room
    assert tended == [("long", 1, "reader")]  # its presence row here goes
