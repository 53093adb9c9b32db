"""Edit, delete, react (PROTOCOL.md §10) end to end: a real server, real clients, real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import psycopg2
import pytest

from app import events
from tests.support.clients import Client, join
from tests.support.databases import sql
from tests.support.identities import unique
from tests.support.servers import Server

THUMBS = "\U0001f44d"
HEART = "\u2764\ufe0f"


def send(client: Client, room: str, content: str) -> dict:
    """Send a room message and return its data (as the sender gets it back)."""
    client.send({"type": "message", "room": room, "content": content})
    return client.expect("message", room=room, content=content)["data"]


def send_dm(client: Client, to: int, content: str) -> dict:
    client.send({"type": "dm", "to": to, "content": content})
    return client.expect("dm_sent")["data"]["message"]


def event_ids(client: Client, count: int) -> list[int]:
    """The eventIds of the next `count` §10 frames (presence and the like passed over)."""
    ids = []
    while len(ids) < count:
        frame = client.recv_any()
        if "eventId" in frame:
            ids.append(frame["eventId"])
    return ids


def two_members(connect: Callable[..., Client], room: str) -> tuple[Client, Client]:
    """Alice and Bob: two new users' clients (of the `connect` fixture), both joined to `room`."""
    alice, bob = connect(), connect()
    join(alice, room)
    join(bob, room)
    return alice, bob


def assert_refused(client: Client, code: str, *frames: dict) -> None:
    """Send each frame in turn, and assert that each is refused with the error `code`."""
    for frame in frames:
        client.send(frame)
        client.expect_error(code)


def history(client: Client, room: str) -> dict[int, dict]:
    client.send({"type": "room_history", "room": room})
    return {m["id"]: m for m in client.expect("room_history", room=room)["data"]}


def test_edit_delete_and_reactions_reach_every_member_and_history_shows_them_now(connect):
    room = unique("room")
    alice, alice_tab, bob = connect(), None, connect()
    alice_tab = connect(alice.user_id, alice.username)
    for client in (alice, alice_tab, bob):
        join(client, room)
    sent = send(alice, room, "helo")
    for client in (alice_tab, bob):
        client.expect("message", id=sent["id"])

    alice.send({"type": "edit", "id": sent["id"], "content": "hello"})
    edits = [c.expect("message_edited") for c in (alice, alice_tab, bob)]
    assert all(e == edits[0] for e in edits)
    edited = edits[0]
    assert edited["eventId"] > sent["id"]
    assert edited["data"] == {**sent, "content": "hello", "editedAt": edited["data"]["editedAt"]}

    reactions = []
    for client, emoji in ((bob, THUMBS), (alice, THUMBS), (bob, HEART)):
        client.send({"type": "react", "id": sent["id"], "emoji": emoji})
        reactions.append(alice_tab.expect("reaction"))
    assert [(r["data"]["userId"], r["data"]["emoji"], r["data"]["on"]) for r in reactions] == [
        (bob.user_id, THUMBS, True),
        (alice.user_id, THUMBS, True),
        (bob.user_id, HEART, True),
    ]
    assert [r["eventId"] for r in reactions] == sorted(r["eventId"] for r in reactions)
    assert reactions[0]["data"] == {
        "id": sent["id"],
        "emoji": THUMBS,
        "userId": bob.user_id,
        "username": bob.username,
        "on": True,
    }
    now = history(bob, room)[sent["id"]]
    assert now["content"] == "hello" and now["editedAt"] == edited["data"]["editedAt"]
    assert now["reactions"] == {THUMBS: [bob.user_id, alice.user_id], HEART: [bob.user_id]}

    bob.send({"type": "unreact", "id": sent["id"], "emoji": THUMBS})
    off = alice.expect("reaction", on=False)
    assert off["data"]["userId"] == bob.user_id and off["eventId"] > reactions[-1]["eventId"]
    assert history(bob, room)[sent["id"]]["reactions"] == {THUMBS: [alice.user_id], HEART: [bob.user_id]}

    alice.send({"type": "delete", "id": sent["id"]})
    deleted = [c.expect("message_deleted") for c in (alice, alice_tab, bob)]
    assert deleted[0]["data"] == {"id": sent["id"], "room": room, "fromUser": alice.user_id}
    assert all(d == deleted[0] for d in deleted)
    tombstone = history(bob, room)[sent["id"]]
    assert tombstone["deleted"] is True and tombstone["content"] == ""
    assert "reactions" not in tombstone


def test_a_deleted_messages_content_is_erased_from_the_database(connect, database_url):
    room = unique("room")
    alice = connect()
    join(alice, room)
    sent = send(alice, room, "secret v1")
    alice.send({"type": "edit", "id": sent["id"], "content": "secret v2"})
    alice.expect("message_edited")
    alice.send({"type": "delete", "id": sent["id"]})
    alice.expect("message_deleted")
    assert sql(database_url, "SELECT content, deleted FROM messages WHERE id = %s", (sent["id"],)) == [("", True)]
    stored = sql(database_url, "SELECT count(*) FROM message_events WHERE content LIKE 'secret%%'")
    assert stored == [(0,)]


def test_dm_events_reach_both_parties_every_connection(connect):
    alice, bob = connect(), connect()
    bob_tab = connect(bob.user_id, bob.username)
    alice_tab = connect(alice.user_id, alice.username)
    sent = send_dm(alice, bob.user_id, "hi bob")
    for client in (bob, bob_tab, alice_tab):
        client.expect("dm", id=sent["id"])
    alice.send({"type": "edit", "id": sent["id"], "content": "hi Bob"})
    for client in (alice, alice_tab, bob, bob_tab):
        frame = client.expect("message_edited")
        assert frame["data"]["to"] == bob.user_id and frame["data"]["content"] == "hi Bob"
    bob.send({"type": "react", "id": sent["id"], "emoji": THUMBS})
    for client in (alice, alice_tab, bob, bob_tab):
        assert client.expect("reaction")["data"]["userId"] == bob.user_id
    alice.send({"type": "delete", "id": sent["id"]})
    for client in (alice, alice_tab, bob, bob_tab):
        assert client.expect("message_deleted")["data"] == {
            "id": sent["id"],
            "to": bob.user_id,
            "fromUser": alice.user_id,
        }
    bob.send({"type": "dm_history", "with": alice.user_id})
    [shown] = [m for m in bob.expect("dm_history")["data"] if m["id"] == sent["id"]]
    assert shown["deleted"] is True and shown["content"] == ""


def test_who_may_do_what(connect):
    room = unique("room")
    alice, bob, carol = connect(), connect(), connect()
    join(alice, room)
    sent = send(alice, room, "mine")
    assert_refused(
        bob, "forbidden", {"type": "edit", "id": sent["id"], "content": "yours"}, {"type": "delete", "id": sent["id"]}
    )
    # a reader who did not join the room may react: answered with the event itself
    bob.send({"type": "react", "id": sent["id"], "emoji": THUMBS})
    assert bob.expect("reaction")["data"]["userId"] == bob.user_id
    assert alice.expect("reaction")["data"]["userId"] == bob.user_id
    # a DM is readable by its two parties only
    dm = send_dm(alice, bob.user_id, "between us")
    assert_refused(
        carol, "not_found", {"type": "react", "id": dm["id"], "emoji": THUMBS}, {"type": "delete", "id": dm["id"]}
    )
    assert_refused(bob, "forbidden", {"type": "edit", "id": dm["id"], "content": "changed"})
    assert_refused(alice, "not_found", {"type": "edit", "id": 2**62, "content": "x"}, {"type": "delete", "id": 2**62})
    # nothing of the refusals reached anyone
    alice.nothing_more("message_edited", wait=0.3)
    alice.nothing_more("message_deleted", wait=0.1)


def test_a_private_rooms_messages_are_not_found(connect, database_url):
    room = unique("room")
    alice, bob = connect(), connect()
    join(alice, room)
    sent = send(alice, room, "soon private")
    sql(database_url, "UPDATE rooms SET is_private = true WHERE name = %s", (room,))
    bob.send({"type": "react", "id": sent["id"], "emoji": THUMBS})
    bob.expect_error("not_found")


@pytest.mark.parametrize(
    "frame, code",
    [
        ({"type": "edit", "id": 1, "content": "   "}, "invalid"),
        ({"type": "edit", "id": 1, "content": "x" * 4001}, "too_large"),
        ({"type": "edit", "id": 1}, "invalid"),
        ({"type": "edit", "content": "x"}, "invalid"),
        ({"type": "delete", "id": "one"}, "invalid"),
        ({"type": "delete", "id": 0}, "not_found"),
        ({"type": "react", "id": 1, "emoji": "a"}, "invalid"),
        ({"type": "react", "id": 1, "emoji": THUMBS * 2}, "invalid"),
        ({"type": "react", "id": 1, "emoji": ""}, "invalid"),
        ({"type": "react", "id": 1}, "invalid"),
        ({"type": "unreact", "id": 1, "emoji": 7}, "invalid"),
    ],
)
def test_bad_event_frames_are_refused_and_the_connection_stays_usable(connect, frame, code):
    import json

    client = connect()
    client.send(json.dumps(frame))
    client.expect_error(code)
    client.send({"type": "ping"})
    client.expect("pong")


def test_resends_store_nothing_twice_and_answer_the_sender_with_the_first_event(connect, database_url):
    room = unique("room")
    alice, bob = two_members(connect, room)
    sent = send(alice, room, "draft")
    bob.expect("message", id=sent["id"])
    alice.send({"type": "edit", "id": sent["id"], "content": "final"})
    first_edit = bob.expect("message_edited")
    alice.expect("message_edited", eventId=first_edit["eventId"])
    alice.send({"type": "edit", "id": sent["id"], "content": "final"})
    assert alice.expect("message_edited") == first_edit
    bob.send({"type": "react", "id": sent["id"], "emoji": THUMBS})
    first_react = alice.expect("reaction")
    bob.expect("reaction", eventId=first_react["eventId"])
    bob.send({"type": "react", "id": sent["id"], "emoji": THUMBS})
    assert bob.expect("reaction") == first_react
    bob.send({"type": "unreact", "id": sent["id"], "emoji": THUMBS})
    first_unreact = alice.expect("reaction", on=False)
    bob.expect("reaction", eventId=first_unreact["eventId"])
    bob.send({"type": "unreact", "id": sent["id"], "emoji": THUMBS})
    assert bob.expect("reaction") == first_unreact
    bob.send({"type": "unreact", "id": sent["id"], "emoji": HEART})
    bob.expect_error("not_found")  # never reacted so: nothing to take back
    alice.send({"type": "delete", "id": sent["id"]})
    first_delete = bob.expect("message_deleted")
    alice.expect("message_deleted", eventId=first_delete["eventId"])
    alice.send({"type": "delete", "id": sent["id"]})
    assert alice.expect("message_deleted") == first_delete
    assert_refused(alice, "not_found", {"type": "edit", "id": sent["id"], "content": "back"})
    assert_refused(bob, "not_found", {"type": "react", "id": sent["id"], "emoji": THUMBS})
    # the other member heard each event once
    for kind in ("message_edited", "reaction", "message_deleted"):
        bob.nothing_more(kind, wait=0.2)
    counts = sql(
        database_url, "SELECT kind, count(*) FROM message_events WHERE message_id = %s GROUP BY kind", (sent["id"],)
    )
    assert dict(counts) == {"edit": 1, "react": 1, "unreact": 1, "delete": 1}


def test_an_emoji_typed_with_or_without_its_presentation_selector_is_one_reaction(connect, database_url):
    room = unique("room")
    alice, bob = two_members(connect, room)
    sent = send(alice, room, "tea?")
    bob.expect("message", id=sent["id"])
    bare_heart = "\u2764"  # a keyboard's heart: no VS16
    bob.send({"type": "react", "id": sent["id"], "emoji": bare_heart})
    on = alice.expect("reaction")
    assert on["data"]["emoji"] == HEART  # told in the one form it is stored in
    assert bob.expect("reaction") == on
    bob.send({"type": "react", "id": sent["id"], "emoji": HEART})  # the picker's heart: the same one
    assert bob.expect("reaction") == on  # a resend
    alice.nothing_more("reaction", wait=0.3)
    assert history(alice, room)[sent["id"]]["reactions"] == {HEART: [bob.user_id]}
    bob.send({"type": "unreact", "id": sent["id"], "emoji": bare_heart})
    off = alice.expect("reaction", on=False)
    assert off["data"]["emoji"] == HEART
    assert "reactions" not in history(alice, room)[sent["id"]]
    stored = sql(database_url, "SELECT DISTINCT emoji FROM message_events WHERE message_id = %s", (sent["id"],))
    assert stored == [(HEART,)]


def test_join_with_since_replays_missed_events_in_id_order_exactly_once(connect):
    room = unique("room")
    alice, bob = two_members(connect, room)
    old = send(alice, room, "old")
    bob.expect("message", id=old["id"])
    cursor = old["id"]
    bob.close()  # away
    alice.send({"type": "edit", "id": old["id"], "content": "old, edited"})
    edit = alice.expect("message_edited")
    new = send(alice, room, "new")
    alice.send({"type": "react", "id": new["id"], "emoji": THUMBS})
    react = alice.expect("reaction")
    alice.send({"type": "edit", "id": new["id"], "content": "new, edited"})
    edit_new = alice.expect("message_edited")
    alice.send({"type": "delete", "id": old["id"]})
    delete = alice.expect("message_deleted")

    back = connect(bob.user_id, bob.username)
    join(back, room, since=cursor)
    replayed = [back.recv_any() for _ in range(5)]
    ids = [frame.get("eventId") or frame["data"]["id"] for frame in replayed]
    assert ids == [edit["eventId"], new["id"], react["eventId"], edit_new["eventId"], delete["eventId"]]
    assert [f["type"] for f in replayed] == [
        "message_edited",
        "message",
        "reaction",
        "message_edited",
        "message_deleted",
    ]
    # each event as it was told live; the edit of the deleted message keeps no content
    assert replayed[2] == react and replayed[3] == edit_new and replayed[4] == delete
    assert replayed[0]["data"]["content"] == "" and replayed[0]["data"]["deleted"] is True
    # the message replayed as it is now
    assert replayed[1]["data"]["content"] == "new, edited" and replayed[1]["data"]["reactions"] == {
        THUMBS: [alice.user_id]
    }
    # a cursor at an event's id replays only what came after it, and live follows
    again = connect(bob.user_id, bob.username)
    join(again, room, since=react["eventId"])
    assert again.recv_any()["eventId"] == edit_new["eventId"]
    assert again.recv_any()["eventId"] == delete["eventId"]
    alice.send({"type": "react", "id": new["id"], "emoji": HEART})
    live = again.recv_any()
    assert live["type"] == "reaction" and live["data"]["emoji"] == HEART
    again.nothing_more("reaction", wait=0.3)


def test_a_member_resuming_after_an_edit_it_heard_live_is_replayed_the_message_as_edited(connect):
    """Members of a room resume with the same `since` and floor, and a page read for one is
    kept for the next (app/resume_reads.py). An edit released in between reaches the next
    one live, before its join: its replay must not then bring the message back as it stood
    before the edit."""
    room = unique("room")
    alice, bob = two_members(connect, room)
    carol = connect()
    join(carol, room)
    seen = send(alice, room, "seen")
    for member in (bob, carol):
        member.expect("message", id=seen["id"])
        member.close()
    missed = send(alice, room, "missed")
    bob_back = connect(bob.user_id, bob.username)
    carol_back = connect(carol.user_id, carol.username)
    join(bob_back, room, since=seen["id"])
    assert bob_back.expect("message", id=missed["id"])["data"]["content"] == "missed"

    alice.send({"type": "edit", "id": missed["id"], "content": "missed, edited"})
    edit = alice.expect("message_edited")
    carol_back.expect("message_edited", eventId=edit["eventId"])  # live, before carol's join
    join(carol_back, room, since=seen["id"])

    replayed = carol_back.expect("message", id=missed["id"])
    assert replayed["data"]["content"] == "missed, edited"
    assert replayed["data"]["editedAt"] == edit["data"]["editedAt"]
    carol_back.nothing_more("message", wait=0.3)


def test_a_room_whose_newest_entry_is_an_event_replays_it_to_a_member_back_after_everyone_left(connect):
    """When nobody is left in the room on the worker, a returning member's connection starts
    the room's stream there from what the database says: its newest entry must count
    events, or an event after the newest message is neither replayed nor live."""
    room = unique("room")
    alice, bob = two_members(connect, room)
    first = send(alice, room, "first")
    bob.expect("message", id=first["id"])
    bob.close()
    alice.send({"type": "react", "id": first["id"], "emoji": THUMBS})
    react = alice.expect("reaction")
    alice.close()  # nobody in the room on the worker now

    back = connect(bob.user_id, bob.username)
    join(back, room, since=first["id"])
    assert back.expect("reaction", timeout=5)["eventId"] == react["eventId"]


@pytest.fixture(scope="module")
def two_workers(database_url):
    # Small replay pages: a replay of events and messages together crosses pages.
    srv = Server(database_url, workers=2, GAP_WAIT_SECONDS="0.2", HEARTBEAT_SECONDS="0.5", REPLAY_PAGE_SIZE="4").start()
    yield srv
    srv.stop()


def event_frames(client: Client, count: int) -> list[dict]:
    """The next `count` §10 frames (presence and the like passed over)."""
    frames = []
    while len(frames) < count:
        frame = client.recv_any()
        assert frame["type"] != "error", frame
        if "eventId" in frame:
            frames.append(frame)
    return frames


def test_events_sent_at_once_are_each_stored_once_and_heard_by_every_member_in_one_order(connect, database_url):
    """Requests arriving together are decided and stored together (app/event_batch.py),
    several about one message among them: each must still be decided on what the one
    before it did, stored once, and told to everyone in one order."""
    room = unique("room")
    author = connect()
    reactors = [connect() for _ in range(5)]
    for client in (author, *reactors):
        join(client, room)
    target = send(author, room, "target")
    for reactor in reactors:
        reactor.expect("message", id=target["id"])
    for reactor in reactors:  # nobody waits for an answer before the next frame
        for kind, emoji in (("react", THUMBS), ("react", HEART), ("unreact", THUMBS), ("react", HEART)):
            reactor.send({"type": kind, "id": target["id"], "emoji": emoji})
    for content in ("first", "second"):
        author.send({"type": "edit", "id": target["id"], "content": content})
    stored = len(reactors) * 3 + 2  # each reactor's second HEART is a resend: answered, not stored
    told = event_frames(author, stored)
    heard = [[frame["eventId"] for frame in told]]
    for reactor in reactors:
        frames = event_frames(reactor, stored + 1)  # its resend's answer too, to it alone
        ids = [frame["eventId"] for frame in frames]
        resend = [frame for frame in frames if frame["type"] == "reaction" and ids.count(frame["eventId"]) == 2]
        assert [(f["data"]["userId"], f["data"]["emoji"], f["data"]["on"]) for f in resend] == [
            (reactor.user_id, HEART, True)
        ] * 2
        heard.append(sorted(set(ids), key=ids.index))
    assert all(ids == heard[0] for ids in heard)
    assert heard[0] == sorted(heard[0])
    now = history(author, room)[target["id"]]
    assert now["content"] == "second"
    hearts = [f["data"]["userId"] for f in told if f["type"] == "reaction" and f["data"]["emoji"] == HEART]
    assert now["reactions"] == {HEART: hearts}
    assert sorted(hearts) == sorted(r.user_id for r in reactors)
    seqs = sql(database_url, "SELECT seq FROM message_events WHERE message_id = %s ORDER BY id", (target["id"],))
    first = sql(database_url, "SELECT seq FROM messages WHERE id = %s", (target["id"],))[0][0] + 1
    assert [seq for (seq,) in seqs] == list(range(first, first + stored))


def test_two_workers_carry_events_like_messages_and_replay_what_a_client_missed(connect, two_workers):
    room = unique("room")
    author = connect(srv=two_workers)
    readers = [connect(srv=two_workers) for _ in range(4)]  # spread over both workers by the kernel
    for client in (author, *readers):
        join(client, room)
    target = send(author, room, "target")
    for reader in readers:
        reader.expect("message", id=target["id"])
    away = readers.pop()
    away.close()
    told = []
    for n, reader in enumerate(readers):
        reader.send({"type": "react", "id": target["id"], "emoji": THUMBS})
        told.append(author.expect("reaction", userId=reader.user_id)["eventId"])
        author.send({"type": "edit", "id": target["id"], "content": f"edit {n}"})
        told.append(author.expect("message_edited", content=f"edit {n}")["eventId"])
    author.send({"type": "delete", "id": target["id"]})
    told.append(author.expect("message_deleted")["eventId"])
    for reader in readers:
        assert event_ids(reader, len(told)) == told
    later = send(author, room, "after them")
    back = connect(away.user_id, away.username, srv=two_workers)
    join(back, room, since=target["id"])
    assert event_ids(back, len(told)) == told
    assert back.expect("message")["data"]["id"] == later["id"]
    back.nothing_more("reaction", wait=0.3)


def test_a_gate_that_never_knew_its_last_id_resumes_after_the_last_message_or_event_before_it(connect, database_url):
    """A conversation's gate starts with its seq only (app/hub.py); its first fill reads from
    the last item numbered below that seq, which may be an event."""
    alice, bob = connect(), connect()
    first = send_dm(alice, bob.user_id, "one")
    alice.send({"type": "react", "id": first["id"], "emoji": THUMBS})
    react = alice.expect("reaction")
    second = send_dm(bob, alice.user_id, "two")
    bob.send({"type": "edit", "id": second["id"], "content": "two!"})
    edit = bob.expect("message_edited")
    channel = ("d", min(alice.user_id, bob.user_id), max(alice.user_id, bob.user_id))
    with psycopg2.connect(database_url, options="-c timezone=UTC") as conn, conn.cursor() as cur:
        # the react is seq 2: from seq 3, after it
        found = events.channel_after(cur, channel, None, None, 100, from_seq=3)
        assert [item.id for item in found] == [second["id"], edit["eventId"]]
        found = events.channel_after(cur, channel, None, None, 100, from_seq=2)
        assert [item.id for item in found] == [react["eventId"], second["id"], edit["eventId"]]
    conn.close()


def test_a_conversations_last_id_follows_its_newest_message_or_event(connect):
    """`conversations` orders by the newest entry of each conversation: a new DM, and
    also an edit or a reaction (whose id a client may hold as its cursor)."""
    alice, bob, carol = connect(), connect(), connect()
    to_bob = send_dm(alice, bob.user_id, "hi bob")
    to_carol = send_dm(alice, carol.user_id, "hi carol")

    def listed() -> list[tuple[int, int]]:
        alice.send({"type": "conversations"})
        return [(c["userId"], c["lastId"]) for c in alice.expect("conversations")["data"]]

    assert listed() == [(carol.user_id, to_carol["id"]), (bob.user_id, to_bob["id"])]
    bob.send({"type": "react", "id": to_bob["id"], "emoji": THUMBS})
    reacted = alice.expect("reaction")["eventId"]
    assert listed() == [(bob.user_id, reacted), (carol.user_id, to_carol["id"])]
    alice.send({"type": "edit", "id": to_carol["id"], "content": "hi Carol"})
    edited = alice.expect("message_edited")["eventId"]
    assert listed() == [(carol.user_id, edited), (bob.user_id, reacted)]
    again = send_dm(bob, alice.user_id, "hello alice")
    assert listed() == [(bob.user_id, again["id"]), (carol.user_id, edited)]
