"""Edits through a PostgreSQL restart: no acknowledged event is lost, none is stored twice."""

from __future__ import annotations

import threading
import time

import pytest

from tests.support.clients import Client, connect_to, join, join_new_clients
from tests.support.databases import sql
from tests.support.faults import FaultPhases, send_until_acked, server_through_outages
from tests.support.identities import unique

pytestmark = pytest.mark.slow


def edit_until_acked(
    client: Client, message_id: int, content: str, phases: FaultPhases, sender: int
) -> tuple[int, int]:
    """Send an edit until acknowledged: (its eventId, how many times it was refused first).

    The same edit sent again is a resend: the server must store it once.
    """
    frame = {"type": "edit", "id": message_id, "content": content}

    def acknowledges(reply: dict) -> bool:
        return reply["type"] == "message_edited" and reply["data"] == {
            **reply["data"],
            "id": message_id,
            "content": content,
        }

    reply, refused = send_until_acked(client, frame, acknowledges, phases, sender, time.monotonic() + 60)
    return reply["eventId"], refused


def test_edits_through_a_database_restart_lose_no_acknowledged_event(embedded_postgres):
    with server_through_outages(embedded_postgres) as (url, srv):
        room = unique("room")
        listener, *authors = join_new_clients(srv, room, 1 + 3)
        targets = []
        for author in authors:
            author.send({"type": "message", "room": room, "content": "first"})
            targets.append(author.expect("message", room=room, fromUser=author.user_id)["data"]["id"])
        for _ in authors:
            listener.expect("message", room=room)
        edits = 16
        phases = FaultPhases(len(authors))
        acked: dict[int, list[int]] = {}
        refusals: list[int] = []

        def edit_all(index: int, author: Client) -> None:
            acked[index] = []
            for n in range(edits):
                if n == edits // 2:
                    phases.at_halfway()
                event_id, refused = edit_until_acked(author, targets[index], f"v{n}", phases, index)
                acked[index].append(event_id)
                refusals.append(refused)

        threads = [threading.Thread(target=edit_all, args=(i, a)) for i, a in enumerate(authors)]
        threads.append(threading.Thread(target=phases.run, args=(embedded_postgres.stop, embedded_postgres.start)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        assert phases.over.is_set()
        assert sum(refusals) > 0, "the outage should have refused some edits"
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
