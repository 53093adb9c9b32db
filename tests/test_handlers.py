"""Command handlers in this process, over a real database and a real socket pair."""

from __future__ import annotations

from types import SimpleNamespace

import gevent.socket
from conftest import sql

from app import db, handlers, store
from app.connection import Connection

CONNECTION_CONFIG = {
    "SOCKET_SEND_BUFFER_BYTES": 0,
    "MAX_FRAME_BYTES": 65536,
    "RATE_BURST_FRAMES": 30,
    "RATE_FRAMES_PER_SECOND": 10.0,
    "OUTBOX_MAX_FRAMES": 2000,
    "OUTBOX_MAX_BYTES": 16 * 1024 * 1024,
    "CLOSE_TIMEOUT_SECONDS": 5.0,
}


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

    def counted(cur, channel, after_id, below, limit):
        pages.append(after_id)
        return channel_after(cur, channel, after_id, below, limit)

    monkeypatch.setattr(store, "channel_after", counted)
    ours, theirs = gevent.socket.socketpair()
    conn = Connection(ours, CONNECTION_CONFIG, "test")
    theirs.close()  # the client went away right after asking
    pool = db.Pool(url, size=1)
    try:
        runtime = SimpleNamespace(config={"REPLAY_PAGE_SIZE": 100}, pool=pool)
        conn.replay_buffers["long"] = []
        handlers.replay(runtime, conn, "long", since=0)
    finally:
        pool.close()
        ours.close()
    assert conn.peer_gone
    assert len(pages) == 1, f"read {len(pages)} pages of 20 for a client that was gone"
