"""Faults made on purpose: traffic ordered around an outage, and a TCP link that stalls or is cut."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tests.support.clients import Client
from tests.support.restartable import EmbeddedPostgres
from tests.support.servers import Server
from tests.support.waiting import wait_for

# A server that lives through a database outage within a test's seconds: a connection
# attempt gives up after 1 s, a send waits 4 s for its commit before it is told
# `unavailable`, and heartbeats come every half second (defaults: 3 s, 10 s, 3 s). The
# burst is large enough that retries never meet the rate limit: these tests are about the outage.
OUTAGE_ENV = {
    "DB_CONNECT_TIMEOUT_SECONDS": "1",
    "STORE_TIMEOUT_SECONDS": "4",
    "HEARTBEAT_SECONDS": "0.5",
    "RATE_BURST_FRAMES": "1000",
}


@contextmanager
def server_through_outages(postgres: EmbeddedPostgres) -> Iterator[tuple[str, Server]]:
    """A server on the restartable `postgres`, set to wait its outages out: (database URL, server)."""
    url = postgres.start()
    srv = Server(url, **OUTAGE_ENV).start()
    try:
        yield url, srv
    finally:
        srv.stop()


class FaultPhases:
    """Orders traffic around a fault by events, not timed sleeps.

    Every sender sends half its messages and waits; then the fault begins (`stop`), the
    senders send the rest into it, and the fault ends (`start`) once each sender has had
    an answer while it lasted. A sender refused during the fault waits for its end, then
    sends again with the same clientId.
    """

    def __init__(self, senders: int) -> None:
        self.senders = senders
        self.halfway = threading.Barrier(senders + 1)
        self.begun = threading.Event()
        self.over = threading.Event()
        self.answered_during: set[int] = set()

    def at_halfway(self) -> None:
        """Called by each sender half-way through: returns once the fault has begun."""
        self.halfway.wait(60)
        self.begun.wait(60)

    def answered(self, sender: int) -> None:
        if self.begun.is_set() and not self.over.is_set():
            self.answered_during.add(sender)

    def refused(self, sender: int) -> None:
        """A send was refused: wait for the end of the fault before sending again."""
        self.answered(sender)
        if self.begun.is_set():
            self.over.wait(60)

    def run(self, stop, start, during=lambda: None) -> None:
        """The fault: `stop` once every sender is half-way, `start` once each was answered."""
        self.halfway.wait(60)
        stop()
        during()
        self.begun.set()
        wait_for(lambda: len(self.answered_during) == self.senders, 60, "every sender answered during the fault")
        start()
        self.over.set()


def send_until_acked(
    client: Client,
    frame: dict,
    acknowledges: Callable[[dict], bool],
    phases: FaultPhases,
    sender: int,
    deadline: float,
) -> tuple[dict, int]:
    """Send `frame` until a reply `acknowledges` it: (that reply, how many `unavailable`s came first).

    A refused frame is sent again as it was (a resend, which the server must not store
    twice) once the fault is over; any error but `unavailable` fails the test.
    """
    unavailable = 0
    while time.monotonic() < deadline:
        client.send(frame)
        while True:
            reply = client.recv_any(timeout=15)
            if acknowledges(reply):
                phases.answered(sender)
                return reply, unavailable
            if reply["type"] == "error":
                assert reply["code"] == "unavailable", reply
                unavailable += 1
                phases.refused(sender)
                break
    raise AssertionError(f"{frame} never acknowledged")


def is_ack_of(reply: dict, client_id: str) -> bool:
    """Whether `reply` is the echo that acknowledges the message sent with `client_id`."""
    return reply["type"] == "message" and reply["data"].get("clientId") == client_id


class StallingProxy:
    """Forwards TCP connections to a port until stall(): then its connections stay open and
    pass nothing either way, like a hung server or a proxy stuck in between, until resume().
    Or until cut(): then its connections are closed, and new ones too as soon as they come,
    like a network partition, until resume(). OS threads, so that it runs while the test's
    own code blocks."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.stalled = threading.Event()
        self.cut_off = threading.Event()
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        self.stalled.set()

    def cut(self) -> None:
        self.cut_off.set()

    def resume(self) -> None:
        """Pass again what waited meanwhile, and what comes next."""
        self.stalled.clear()
        self.cut_off.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.cut_off.is_set():
                client.close()
                continue
            self.accepted += 1
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        with client, upstream:
            while True:
                ready, _, _ = select.select([client, upstream], [], [], 0.05)
                if self.cut_off.is_set():
                    return
                if self.stalled.is_set():
                    continue
                for sock in ready:
                    data = sock.recv(65536)
                    if not data or self.cut_off.is_set():
                        return  # (what recv() read may have come after the cut)
                    (upstream if sock is client else client).sendall(data)

    def close(self) -> None:
        self.server.close()
