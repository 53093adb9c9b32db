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


def test_a_listener_that_was_connected_reconnects_soon_again(monkeypatch):
    """The pause before reconnecting doubles while reconnecting fails, and starts over
    once a connection has served: a fifth restart of the database, days later, must not
    find the listener at the longest pause."""
    from types import SimpleNamespace

    from app import bus as bus_module

    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        gevent.sleep(0)

    monkeypatch.setattr(
        bus_module, "gevent", SimpleNamespace(sleep=pause, spawn=gevent.spawn, GreenletExit=gevent.GreenletExit)
    )

    class Flaky(bus_module.Bus):
        """Fails to connect twice, then serves a while and loses the connection; twice."""

        attempts = 0

        def _listen(self) -> None:
            self.attempts += 1
            if self.attempts in (3, 6):
                self.connected = True
            raise OSError("server closed the connection")

    listener = Flaky("me", lambda payload: None, lambda: None, peer_hold_seconds=5)
    listener.start()
    with gevent.Timeout(5):
        while listener.attempts < 7:
            gevent.sleep(0.001)
    listener.greenlet.kill()
    first = bus_module.RECONNECT_FIRST_SECONDS
    assert pauses[:6] == [first, first * 2, first, first * 2, first * 4, first]
