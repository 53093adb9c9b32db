"""The PostgreSQL bus's listener, in this process, over a real database."""

from __future__ import annotations

import time

import gevent
from conftest import sql

from app import db
from app.bus import CHANNEL, PostgresBus


def test_the_listener_tells_how_far_it_has_handled_the_bus(fresh_database):
    """A gap waits for payloads that came but were not handled yet (Hub._fill)."""
    url = fresh_database()
    heard: list[dict] = []
    pool = db.Pool(url, size=1)
    bus = PostgresBus(url, pool, origin="me", on_payload=heard.append, on_connected=lambda: None, peer_hold_seconds=5)
    bus.start()
    try:
        with gevent.Timeout(5):
            while not bus.connected:
                gevent.sleep(0.01)
            # Once it has handled its own hello (skipped), it waits with nothing come:
            # all is handled, up to now (else the timeout fails the test).
            while time.monotonic() > bus.handled_until():
                gevent.sleep(0.01)

        sent_at = time.monotonic()
        sql(url, "SELECT pg_notify(%s, %s)", (CHANNEL, 'other|{"k":"hello"}'))
        # This greenlet does not yield, so the listener cannot run: like a busy process.
        deadline = time.monotonic() + 5
        while bus.handled_until() >= sent_at:
            assert time.monotonic() < deadline, "the payload never reached the listener's socket"
            time.sleep(0.01)
        assert heard == []

        with gevent.Timeout(5):
            while not heard:
                gevent.sleep(0.01)
        assert heard == [{"k": "hello"}]
        assert bus.handled_until() >= sent_at
    finally:
        bus.greenlet.kill()
        pool.close()
