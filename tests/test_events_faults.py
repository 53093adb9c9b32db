"""Edits and reactions through a PostgreSQL restart and a killed worker: no acknowledged
event is lost, none is stored twice."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import pytest
import websocket

from tests.support.clients import Client, connect_to, join, join_new_clients
from tests.support.cluster import CLUSTER_ENV
from tests.support.databases import sql
from tests.support.faults import FaultPhases, send_until_acked, server_through_outages
from tests.support.identities import unique
from tests.support.servers import Server

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


def first_messages(authors: list[Client], listener: Client, room: str) -> list[int]:
    """Each author's first message in the room, once the listener has heard them all: their ids."""
    targets = []
    for author in authors:
        author.send({"type": "message", "room": room, "content": "first"})
        targets.append(author.expect("message", room=room, fromUser=author.user_id)["data"]["id"])
    for _ in authors:
        listener.expect("message", room=room)
    return targets


def test_edits_through_a_database_restart_lose_no_acknowledged_event(embedded_postgres):
    with server_through_outages(embedded_postgres) as (url, srv):
        room = unique("room")
        listener, *authors = join_new_clients(srv, room, 1 + 3)
        targets = first_messages(authors, listener, room)
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


# Each author's requests in the killed-worker test: an edit, then a reaction, in turn.
KILL_STEPS = 12
# The step whose request is in flight when the worker dies: a reaction for the first
# author, an edit for the second, and so on.
KILLED_AT_STEP = 5
STEP_EMOJIS = ["👍", "😂", "🎉", "🔥", "👀", "🚀"]
# What a client reads from a connection its worker's death cut (an empty read: ValueError).
CONNECTION_LOST = (websocket.WebSocketException, OSError, ValueError)


def step_request(step: int, target: int) -> tuple[dict, Callable[[dict], bool]]:
    """The request of an author's step, and what tells its acknowledgement from other frames."""
    if step % 2 == 0:
        content = f"v{step}"

        def edited(reply: dict) -> bool:
            data = reply["data"]
            return reply["type"] == "message_edited" and data["id"] == target and data["content"] == content

        return {"type": "edit", "id": target, "content": content}, edited
    emoji = STEP_EMOJIS[step // 2]

    def reacted(reply: dict) -> bool:
        data = reply["data"]
        return reply["type"] == "reaction" and data["id"] == target and data["emoji"] == emoji and data["on"]

    return {"type": "react", "id": target, "emoji": emoji}, reacted


def event_ids(client: Client, count: int) -> list[int]:
    """The eventIds of the next `count` edits and reactions the client receives."""
    ids = []
    while len(ids) < count:
        frame = client.recv_any(timeout=15)
        if frame["type"] in ("message_edited", "reaction"):
            ids.append(frame["eventId"])
    return ids


def test_edits_and_reactions_through_a_killed_worker_lose_no_acknowledged_event(fresh_database):
    url = fresh_database()
    # Two instances of one worker each: the authors' worker is killed, the listener's lives on.
    servers = [Server(url, **CLUSTER_ENV, RATE_BURST_FRAMES="1000").start() for _ in range(2)]
    try:
        room = unique("room")
        listener = connect_to(servers[1])
        join(listener, room)
        authors = join_new_clients(servers[0], room, 3)
        targets = first_messages(authors, listener, room)
        in_flight = [threading.Event() for _ in authors]
        killed = threading.Event()
        acked: dict[int, list[int]] = {}
        reconnects: dict[int, int] = {}

        def author_steps(index: int) -> None:
            client, user_id = authors[index], authors[index].user_id
            acked[index], reconnects[index] = [], 0
            for step in range(KILL_STEPS):
                request, acknowledges = step_request(step, targets[index])
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    try:
                        client.send(request)
                        if step == KILLED_AT_STEP + index % 2 and not in_flight[index].is_set():
                            # Sent, and the worker dies: whatever answer it wrote is not
                            # read, as a client cut off cannot count on reading it. Stored
                            # or not, the resend must come back with exactly one event.
                            in_flight[index].set()
                            killed.wait(30)
                            client.close()
                            raise ConnectionAbortedError("the worker died with the answer unread")
                        reply = client.recv_any(timeout=15)
                        while not acknowledges(reply):
                            assert reply["type"] != "error", reply
                            reply = client.recv_any(timeout=15)
                        acked[index].append(reply["eventId"])
                        break
                    except CONNECTION_LOST:
                        reconnects[index] += 1
                        client = connect_to(servers[0], user_id)  # the arbiter's new worker
                else:
                    raise AssertionError(f"{request} never acknowledged")

        threads = [threading.Thread(target=author_steps, args=(i,)) for i in range(len(authors))]
        for thread in threads:
            thread.start()
        for event in in_flight:
            assert event.wait(30)
        (worker,) = servers[0].worker_pids()
        os.kill(worker, signal.SIGKILL)
        killed.set()
        for thread in threads:
            thread.join(90)
        assert all(count >= 1 for count in reconnects.values()), reconnects
        acked_ids = sorted(event_id for ids in acked.values() for event_id in ids)
        assert len(acked_ids) == len(set(acked_ids)) == len(authors) * KILL_STEPS
        # Each acknowledged event is stored once, and nothing else is.
        stored = sql(url, "SELECT id FROM message_events WHERE room = %s ORDER BY id", (room,))
        assert [event_id for (event_id,) in stored] == acked_ids
        for author, target in zip(authors, targets, strict=True):
            content, reactions = sql(url, "SELECT content, reactions FROM messages WHERE id = %s", (target,))[0]
            assert content == f"v{KILL_STEPS - 2}"
            assert reactions == {emoji: [author.user_id] for emoji in STEP_EMOJIS}
        # The member on the other instance got each once, in id order, whichever worker
        # committed it; one that comes back with the id before them gets them all too.
        assert event_ids(listener, len(acked_ids)) == acked_ids
        late = connect_to(servers[1])
        join(late, room, since=max(targets))
        assert event_ids(late, len(acked_ids)) == acked_ids
    finally:
        for srv in servers:
            srv.stop()
