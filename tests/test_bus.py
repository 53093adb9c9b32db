"""The buses' listeners and publisher, in this process, over a real database and Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import gevent
import orjson
import psycopg2.extensions
import pytest

from app import bus as bus_module
from app import db
from app.bus import CHANNEL, PostgresBus, RedisBus
from app.messages import StoredMessage, message_data
from tests.support.databases import sql
from tests.support.faults import StallingProxy


def test_the_listener_tells_how_far_it_has_handled_the_bus(fresh_database):
    """A gap waits for payloads that came but were not handled yet (Hub._fill)."""
    url = fresh_database()
    heard: list[dict] = []
    pool = db.Pool(url, size=1)
    bus = PostgresBus(
        url, pool, origin="me", deployment="d1", on_payload=heard.append, on_connected=lambda: None, peer_hold_seconds=5
    )
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
        # As another process would: without yielding to the listener meanwhile (the app
        # makes psycopg2 wait through gevent, for every connection of this process).
        cooperative = psycopg2.extensions.get_wait_callback()
        psycopg2.extensions.set_wait_callback(None)
        try:
            sql(url, "SELECT pg_notify(%s, %s)", (CHANNEL, 'd1/other|{"k":"hello"}'))
        finally:
            psycopg2.extensions.set_wait_callback(cooperative)
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

    listener = Flaky("me", "d1", lambda payload: None, lambda: None, peer_hold_seconds=5)
    listener.start()
    with gevent.Timeout(5):
        while listener.attempts < 7:
            gevent.sleep(0.001)
    listener.greenlet.kill()
    first = bus_module.RECONNECT_FIRST_SECONDS
    assert pauses[:6] == [first, first * 2, first, first * 2, first * 4, first]


def redis_bus(url: str, channel: str = "chat_events:d1", on_connected: Callable[[], None] = lambda: None) -> RedisBus:
    """Node `me` of deployment `d1` on the Redis at `url`, deaf to the payloads it hears."""
    return RedisBus(
        url,
        channel,
        origin="me",
        deployment="d1",
        on_payload=lambda payload: None,
        on_connected=on_connected,
        peer_hold_seconds=5,
    )


def test_publishing_to_a_hung_redis_does_not_hold_up_the_commit():
    """The group commit calls publish_messages before answering its senders: it only
    queues, so a Redis that accepts connections and never answers costs it nothing (it
    waited out the socket timeout, 1 s, in every batch)."""
    import select
    import socket

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)
    try:
        bus = redis_bus(f"redis://127.0.0.1:{hung.getsockname()[1]}/0")
        bus.publish_messages([room_message(1), room_message(2)])
        assert select.select([hung], [], [], 0)[0] == [], "the commit itself went to Redis"
        assert len(bus.outgoing) == 2
    finally:
        hung.close()


def test_queued_payloads_reach_redis_in_order(private_redis):
    import redis

    listener = redis.Redis.from_url(private_redis.url).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(CHANNEL)
    bus = redis_bus(private_redis.url, CHANNEL)
    bus.publisher_greenlet = gevent.spawn(bus._publish_forever)  # the publisher alone, no listener
    try:
        bus.publish_messages([room_message(1), room_message(2)])
        bus.publish_event({"k": "t", "room": "r", "userId": 1, "username": "u"})
        bus.publish_messages([room_message(3)])
        heard: list[dict] = []
        with gevent.Timeout(5):
            while len(heard) < 4:
                gevent.sleep(0.01)  # the publisher's turn
                item = listener.get_message(timeout=0)
                if item:
                    heard.append(orjson.loads(item["data"].partition(b"|")[2]))
        assert [(p["k"], p.get("s")) for p in heard] == [("m", 1), ("m", 2), ("t", None), ("m", 3)]
    finally:
        bus.publisher_greenlet.kill()
        listener.close()


def room_message(seq: int) -> StoredMessage:
    return StoredMessage(id=seq, seq=seq, data=message_data(seq, 1, "u", "c", "t", room="r"))


@pytest.mark.slow
def test_a_postgres_listener_whose_server_went_silent_reconnects(fresh_database, monkeypatch):
    """A hung server or proxy leaves the LISTEN connection open and silent: NOTIFYs of the
    other nodes would be lost until TCP gave up, hours later."""
    monkeypatch.setattr(bus_module, "LISTENER_PROBE_SECONDS", 0.3)
    db.make_cooperative()
    url = fresh_database()
    proxy = StallingProxy(5432)
    proxied = url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    pool = db.Pool(url, size=1)
    connected: list[bool] = []
    bus = PostgresBus(
        proxied,
        pool,
        origin="me",
        deployment="d1",
        on_payload=lambda p: None,
        on_connected=lambda: connected.append(True),
        peer_hold_seconds=5,
    )
    try:
        listening = gevent.spawn(bus._listen)
        with gevent.Timeout(5):
            while not connected:
                gevent.sleep(0.01)
        gevent.sleep(1)  # quiet, but answering its probes: still listening
        assert not listening.dead
        proxy.stall()
        listening.join(timeout=5)
        assert listening.dead, "the listener still waits on a silent connection"
        assert isinstance(listening.exception, ConnectionError)
    finally:
        listening.kill()
        proxy.close()
        pool.close()


@pytest.mark.slow
def test_a_redis_listener_whose_server_went_silent_reconnects(private_redis, monkeypatch):

    monkeypatch.setattr(bus_module, "LISTENER_PROBE_SECONDS", 0.3)
    proxy = StallingProxy(private_redis.port)
    connected: list[bool] = []
    bus = redis_bus(f"redis://127.0.0.1:{proxy.port}/0", on_connected=lambda: connected.append(True))
    # redis-py blocks this thread (the tests do not patch sockets for gevent): the
    # listener runs here, and the proxy in its own threads stalls a second after it
    # subscribed, having answered its probes meanwhile.
    threading.Timer(1.5, proxy.stall).start()
    started = time.monotonic()
    try:
        with pytest.raises(ConnectionError):
            bus._listen()
        assert connected == [True]
        assert 1.5 < time.monotonic() - started < 5
    finally:
        proxy.close()


def test_a_payload_of_another_deployment_is_dropped_before_anything_sees_it():
    """A channel shared by mistake (the same BUS_CHANNEL for two deployments): the other
    deployment's payloads reach no gate, and do not count as a peer listening."""
    from app.bus import Bus

    heard: list[dict] = []
    bus = Bus(origin="n1", deployment="d1", on_payload=heard.append, on_connected=lambda: None, peer_hold_seconds=5)
    bus.peers_until = 0.0  # alone so far
    bus._receive('d2/n9|{"k":"m","s":1,"d":{"id":1}}')
    bus._receive('d2/n9|{"k":"hello"}')
    bus._receive('d1/n1|{"k":"hello"}')  # its own
    assert heard == [] and not bus.announcing()
    bus._receive('d1/n2|{"k":"hello"}')
    assert heard == [{"k": "hello"}] and bus.announcing()
