"""Edits, deletes and reactions across workers and hosts, on both buses (PROTOCOL.md §10).

Two instances ("hosts") of two workers each share one PostgreSQL: events must reach every
member once, in the room's one order with the messages, and a client that was away must
get every one it missed through `join` with `since`, whichever instance it comes back to.
"""

from __future__ import annotations

import threading

import pytest

from tests.support.clients import Client, connect_to, join
from tests.support.identities import unique

pytestmark = pytest.mark.cluster

THUMBS = "\U0001f44d"
EVENT_TYPES = ("message", "message_edited", "message_deleted", "reaction")


def stream(client: Client, count: int) -> list[tuple[str, int]]:
    """The next `count` messages and events a client gets, as (type, id or eventId)."""
    got = []
    while len(got) < count:
        frame = client.recv_any(timeout=15)
        if frame["type"] in EVENT_TYPES:
            got.append((frame["type"], frame.get("eventId") or frame["data"]["id"]))
    return got


def test_events_and_messages_reach_every_member_once_in_one_order_and_replay_after_absence(cluster):
    room = unique("room")
    author = connect_to(cluster[0])
    members = [connect_to(cluster[index % 2]) for index in range(4)]
    away = connect_to(cluster[1])
    for client in (author, *members, away):
        join(client, room)
    targets = []
    for n in range(3):
        author.send({"type": "message", "room": room, "content": f"m{n}"})
        targets.append(author.expect("message", room=room, content=f"m{n}")["data"]["id"])
    for client in (*members, away):
        stream(client, 3)
    cursor = targets[-1]
    away.close()

    # Reactions from every member, edits and a delete by the author, and new messages,
    # all at once from both instances.
    def react(client: Client) -> None:
        for target in targets:  # (their echoes are read below, with everything else)
            client.send({"type": "react", "id": target, "emoji": THUMBS})

    def author_works() -> None:
        for n, target in enumerate(targets):
            author.send({"type": "edit", "id": target, "content": f"m{n} edited"})
            author.expect("message_edited", id=target)
            author.send({"type": "message", "room": room, "content": f"new {n}"})
            author.expect("message", content=f"new {n}")
        author.send({"type": "delete", "id": targets[0]})
        author.expect("message_deleted", id=targets[0])

    threads = [threading.Thread(target=react, args=(c,)) for c in members]
    threads.append(threading.Thread(target=author_works))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = len(members) * len(targets) + 2 * len(targets) + 1
    seen = [stream(client, total) for client in members]
    assert all(order == seen[0] for order in seen), "every member sees one order"
    ids = [ident for _, ident in seen[0]]
    assert ids == sorted(ids) and len(set(ids)) == total, "that order is id order, each once"
    for client in members:
        client.nothing_more("reaction", wait=0.3)

    # Back on the other instance with the last id it saw: exactly what it missed, in order.
    back = connect_to(cluster[0], away.user_id)
    join(back, room, since=cursor)
    assert stream(back, total) == seen[0]
    for kind in EVENT_TYPES:
        back.nothing_more(kind, wait=0.2)


def test_dm_events_cross_instances_to_both_parties(cluster):
    alice, bob = connect_to(cluster[0]), connect_to(cluster[1])
    alice_other = connect_to(cluster[1], alice.user_id)
    alice.send({"type": "dm", "to": bob.user_id, "content": "hi"})
    sent = alice.expect("dm_sent")["data"]["message"]
    bob.expect("dm", id=sent["id"])
    alice_other.expect("dm", id=sent["id"])
    bob.send({"type": "react", "id": sent["id"], "emoji": THUMBS})
    for client in (alice, alice_other, bob):
        assert client.expect("reaction")["data"]["userId"] == bob.user_id
    alice_other.send({"type": "edit", "id": sent["id"], "content": "hi there"})
    for client in (alice, alice_other, bob):
        edited = client.expect("message_edited")["data"]
        assert edited["content"] == "hi there" and edited["reactions"] == {THUMBS: [bob.user_id]}


def test_an_edit_too_large_for_a_notify_payload_still_crosses(cluster):
    room = unique("room")
    author, reader = connect_to(cluster[0]), connect_to(cluster[1])
    join(author, room)
    join(reader, room)
    author.send({"type": "message", "room": room, "content": "short"})
    target = author.expect("message", room=room)["data"]["id"]
    content = "é" * 4000  # 8,000 bytes of UTF-8: over PostgreSQL's NOTIFY payload limit
    author.send({"type": "edit", "id": target, "content": content})
    author.send({"type": "react", "id": target, "emoji": THUMBS})
    edited = reader.expect("message_edited")
    reaction = reader.expect("reaction")
    assert edited["data"]["content"] == content and edited["eventId"] < reaction["eventId"]


def test_one_reaction_sent_by_two_tabs_on_two_instances_at_once_is_stored_once(cluster):
    """Both tabs react with the same emoji before either is stored, to ten messages: one
    reaction row each, one `reaction` event each for the others, and each tab is answered
    with that event (the second send's answer, the event before it, is a second copy)."""
    room = unique("room")
    author = connect_to(cluster[0])
    tab_a = connect_to(cluster[0])
    tab_b = connect_to(cluster[1], tab_a.user_id)
    for client in (author, tab_a, tab_b):
        join(client, room)
    targets = []
    for n in range(10):
        author.send({"type": "message", "room": room, "content": f"m{n}"})
        targets.append(author.expect("message", room=room, content=f"m{n}")["data"]["id"])
    for target in targets:
        tab_a.send({"type": "react", "id": target, "emoji": THUMBS})
        tab_b.send({"type": "react", "id": target, "emoji": THUMBS})
    events = {}
    for target in targets:
        reaction = author.expect("reaction", id=target)
        assert reaction["data"]["userId"] == tab_a.user_id and reaction["data"]["on"] is True
        events[target] = reaction["eventId"]
    author.nothing_more("reaction", wait=0.5)
    assert list(events.values()) == sorted(events.values())
    for tab in (tab_a, tab_b):
        for target in targets:
            assert tab.expect("reaction", id=target)["eventId"] == events[target]
        copies: dict[int, int] = {}
        while True:
            try:
                reaction = tab.expect("reaction", timeout=0.5)
            except TimeoutError:
                break
            assert events[reaction["data"]["id"]] == reaction["eventId"]
            copies[reaction["eventId"]] = copies.get(reaction["eventId"], 0) + 1
        assert all(count == 1 for count in copies.values()), copies
    author.send({"type": "room_history", "room": room, "limit": 10})
    history = author.expect("room_history")["data"]
    assert all(message["reactions"] == {THUMBS: [tab_a.user_id]} for message in history)
