"""A DM catch-up (`dm_history` with `after`) brings the edits, deletes and reactions made
while the client was away: a real server, real clients, real PostgreSQL."""

from __future__ import annotations

import pytest

from tests.support.clients import Client
from tests.support.servers import Server

THUMBS = "\U0001f44d"
HEART = "\u2764\ufe0f"


def send_dm(client: Client, to: int, content: str) -> dict:
    client.send({"type": "dm", "to": to, "content": content})
    return client.expect("dm_sent")["data"]["message"]


def catch_up(client: Client, other: int, after: int, **page) -> dict:
    client.send({"type": "dm_history", "with": other, "after": after, **page})
    return client.expect("dm_history", after=after)


def test_a_dm_catch_up_carries_what_changed_while_away_each_once_in_id_order(connect):
    alice, bob = connect(), connect()
    old = send_dm(alice, bob.user_id, "old")
    bob.expect("dm", id=old["id"])
    cursor = old["id"]
    bob.close()  # away

    alice.send({"type": "edit", "id": old["id"], "content": "old, edited"})
    edit = alice.expect("message_edited")
    alice.send({"type": "react", "id": old["id"], "emoji": THUMBS})
    react = alice.expect("reaction")
    new = send_dm(alice, bob.user_id, "new")
    alice.send({"type": "react", "id": new["id"], "emoji": HEART})
    react_new = alice.expect("reaction")
    alice.send({"type": "delete", "id": old["id"]})
    delete = alice.expect("message_deleted")

    back = connect(bob.user_id, bob.username)
    answer = catch_up(back, alice.user_id, cursor)
    # the new message, as it is now
    assert [m["id"] for m in answer["data"]] == [new["id"]]
    assert answer["data"][0]["reactions"] == {HEART: [alice.user_id]}
    # each event once, in id order, as it was told live; the edit of the message deleted
    # since keeps no content (as in a room's replay)
    assert [e["eventId"] for e in answer["events"]] == [f["eventId"] for f in (edit, react, react_new, delete)]
    assert answer["events"][1:] == [react, react_new, delete]
    assert answer["events"][0]["type"] == "message_edited"
    assert answer["events"][0]["data"]["content"] == "" and answer["events"][0]["data"]["deleted"] is True
    assert "more" not in answer
    back.nothing_more("message_edited", wait=0.3)

    # a cursor at an event's id: only what came after it
    later = catch_up(back, alice.user_id, react["eventId"])
    assert [m["id"] for m in later["data"]] == [new["id"]]
    assert later["events"] == [react_new, delete]
    # nothing since: nothing
    assert catch_up(back, alice.user_id, delete["eventId"]) | {"limit": 0} == {
        "type": "dm_history",
        "with": alice.user_id,
        "after": delete["eventId"],
        "limit": 0,
        "data": [],
        "events": [],
    }
    # the latest page and older pages carry no events
    back.send({"type": "dm_history", "with": alice.user_id})
    assert "events" not in back.expect("dm_history")


def test_a_full_page_carries_the_events_up_to_its_last_message_and_the_next_page_the_rest(connect):
    alice, bob = connect(), connect()
    first = send_dm(alice, bob.user_id, "first")
    alice.send({"type": "edit", "id": first["id"], "content": "first, edited"})
    early = alice.expect("message_edited")
    second = send_dm(alice, bob.user_id, "second")
    third = send_dm(alice, bob.user_id, "third")
    alice.send({"type": "edit", "id": second["id"], "content": "second, edited"})
    late = alice.expect("message_edited")

    page = catch_up(bob, alice.user_id, first["id"] - 1, limit=2)
    assert [m["id"] for m in page["data"]] == [first["id"], second["id"]]
    assert page["events"] == [early]
    rest = catch_up(bob, alice.user_id, second["id"], limit=2)
    assert [m["id"] for m in rest["data"]] == [third["id"]]
    assert rest["events"] == [late]


def test_a_catch_up_with_before_too_stops_its_messages_and_events_below_it(connect):
    alice, bob = connect(), connect()
    first, second, third, fourth = (send_dm(alice, bob.user_id, f"dm {n}") for n in range(4))
    alice.send({"type": "edit", "id": second["id"], "content": "second, edited"})
    edited = alice.expect("message_edited")

    between = catch_up(bob, alice.user_id, first["id"], before=fourth["id"])
    assert between["before"] == fourth["id"]
    assert [m["id"] for m in between["data"]] == [second["id"], third["id"]]
    assert between["events"] == []  # the edit came after `before`
    below_the_edit = catch_up(bob, alice.user_id, first["id"], before=edited["eventId"] + 1)
    assert [m["id"] for m in below_the_edit["data"]] == [second["id"], third["id"], fourth["id"]]
    assert below_the_edit["events"] == [edited]


def test_a_dm_catch_up_is_only_ever_of_the_callers_own_conversation(connect):
    alice, bob, eve = connect(), connect(), connect()
    sent = send_dm(alice, bob.user_id, "for bob")
    alice.send({"type": "edit", "id": sent["id"], "content": "for bob only"})
    alice.expect("message_edited")
    # eve asks about her (empty) conversation with alice: nothing of alice and bob's
    answer = catch_up(eve, alice.user_id, 0)
    assert answer["data"] == [] and answer["events"] == []


@pytest.fixture
def capped_server(database_url):
    srv = Server(database_url, DM_CATCH_UP_EVENTS="2").start()
    yield srv
    srv.stop()


def test_events_past_the_cap_come_with_the_next_answer(connect, capped_server):
    alice, bob = connect(srv=capped_server), connect(srv=capped_server)
    sent = send_dm(alice, bob.user_id, "react to me")
    told = []
    for emoji in (THUMBS, HEART, "\U0001f389"):
        alice.send({"type": "react", "id": sent["id"], "emoji": emoji})
        told.append(alice.expect("reaction"))
    first = catch_up(bob, alice.user_id, sent["id"])
    assert first["events"] == told[:2] and first["more"] is True
    rest = catch_up(bob, alice.user_id, told[1]["eventId"])
    assert rest["events"] == told[2:] and "more" not in rest
