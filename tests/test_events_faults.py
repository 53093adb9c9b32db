"""Edits through a PostgreSQL restart: no acknowledged event is lost, none is stored twice."""

from __future__ import annotations

import threading
import time

import pytest

from tests.support.clients import Client, join
from tests.support.databases import sql
from tests.support.faults import FaultPhases
from tests.support.identities import make_token, new_user_id, unique
from tests.support.servers import Server

pytestmark = pytest.mark.slow


def connect_to(srv: Server, user_id: int | None = None) -> Client:
    user_id = user_id or new_user_id()
    client = Client.connect(srv.url, make_token(user_id, f"user{user_id}"))
    client.expect("welcome")
    client.user_id = user_id
    return client


def edit_until_acked(
    client: Client, message_id: int, content: str, phases: FaultPhases, index: int, refusals: list
) -> int:
    """Send an edit until the server acknowledges it (the same edit again is a resend);
    return its eventId."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        client.send({"type": "edit", "id": message_id, "content": content})
        while True:
            reply = client.recv_any(timeout=15)
            if reply["type"] == "message_edited" and reply["data"] == {
                **reply["data"],
                "id": message_id,
                "content": content,
            }:
                phases.answered(index)
                return reply["eventId"]
            if reply["type"] == "error":
                assert reply["code"] == "unavailable", reply
                refusals.append(content)
                phases.refused(index)
                break
    raise AssertionError(f"edit {content!r} never acknowledged")


def test_edits_through_a_database_restart_lose_no_acknowledged_event(embedded_postgres):
    url = embedded_postgres.start()
    outage_env = {"DB_CONNECT_TIMEOUT_SECONDS": "1", "STORE_TIMEOUT_SECONDS": "4", "HEARTBEAT_SECONDS": "0.5"}
    srv = Server(url, RATE_BURST_FRAMES="1000", **outage_env).start()
    try:
        room = unique("room")
        listener = connect_to(srv)
        join(listener, room)
        authors = [connect_to(srv) for _ in range(3)]
        targets = []
        for author in authors:
            join(author, room)
            author.send({"type": "message", "room": room, "content": "first"})
            targets.append(author.expect("message", room=room, fromUser=author.user_id)["data"]["id"])
        for _ in authors:
            listener.expect("message", room=room)
        edits = 16
        phases = FaultPhases(len(authors))
        acked: dict[int, list[int]] = {}
        refusals: list[str] = []

        def edit_all(index: int, author: Client) -> None:
            acked[index] = []
            for n in range(edits):
                if n == edits // 2:
                    phases.at_halfway()
                acked[index].append(edit_until_acked(author, targets[index], f"v{n}", phases, index, refusals))

        threads = [threading.Thread(target=edit_all, args=(i, a)) for i, a in enumerate(authors)]
        threads.append(threading.Thread(target=phases.run, args=(embedded_postgres.stop, embedded_postgres.start)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        assert phases.over.is_set()
        assert refusals, "the outage should have refused some edits"
        acked_ids = sorted(event_id for ids in acked.values() for event_id in ids)
        assert len(acked_ids) == len(authors) * edits
        # Each acknowledged edit is stored once, and nothing else is.
        stored = sql(url, "SELECT id, content FROM message_events WHERE room = %s ORDER BY id", (room,))
        assert [event_id for event_id, _ in stored] == acked_ids
        for index, target in enumerate(targets):
            shown = sql(url, "SELECT content FROM messages WHERE id = %s", (target,))
            assert shown == [(f"v{edits - 1}",)], index
        # The member that stayed got each once, in id order (those whose commit it did not
        # see delivered, from the database).
        received = [listener.expect("message_edited", timeout=15)["eventId"] for _ in acked_ids]
        assert received == acked_ids
        listener.nothing_more("message_edited", wait=1.0)
        # And one that comes back with the id before them gets them all, in order.
        late = connect_to(srv)
        join(late, room, since=max(targets))
        assert [late.expect("message_edited")["eventId"] for _ in acked_ids] == acked_ids
    finally:
        srv.stop()
