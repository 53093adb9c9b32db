"""Message search (PROTOCOL.md §11), over a real server and PostgreSQL's full-text index."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.support.clients import Client, join
from tests.support.databases import sql
from tests.support.identities import unique


def word() -> str:
    """A word no other test writes."""
    return f"w{uuid.uuid4().hex[:10]}"


def send(client: Client, room: str, content: str) -> dict:
    client.send({"type": "message", "room": room, "content": content})
    return client.expect("message", room=room, content=content)["data"]


def dm(client: Client, to: int, content: str) -> dict:
    client.send({"type": "dm", "to": to, "content": content})
    return client.expect("dm_sent")["data"]["message"]


def search(client: Client, query: str, **fields) -> list[dict]:
    client.send({"type": "search", "query": query, **fields})
    answer = client.expect("search", query=query)
    return answer["data"]


def test_search_finds_what_the_user_may_read_newest_first(connect):
    """Member rooms and the user's own DMs (sent or received); not a room they are not a
    member of, nor other people's DMs."""
    secret = word()
    mine, elsewhere = unique("mine"), unique("elsewhere")
    alice, bob, carol = connect(), connect(), connect()
    join(alice, mine)
    join(bob, mine)
    join(carol, elsewhere)
    found = [
        send(bob, mine, f"the {secret} is here"),
        dm(bob, alice.user_id, f"psst, {secret.upper()}"),
        dm(alice, carol.user_id, f"my own {secret}!"),
    ]
    send(carol, elsewhere, f"{secret} in a room alice is not in")
    dm(bob, carol.user_id, f"{secret} between others")
    send(bob, mine, "nothing to find here")
    assert search(alice, secret) == found[::-1]
    # Narrowed to one room or conversation.
    assert search(alice, secret, room=mine) == [found[0]]
    assert search(alice, secret, **{"with": carol.user_id}) == [found[2]]
    assert search(alice, secret, **{"with": bob.user_id}) == [found[1]]
    # Words are ANDed; a word found nowhere finds nothing.
    assert search(alice, f"{secret} here") == [found[0]]
    assert search(alice, word()) == []


def test_search_pages_with_before_and_caps_limit(connect, database_url):
    secret = word()
    room = unique("many")
    alice = connect()
    join(alice, room)
    # 120 matching messages, stored straight into the database (the generated column
    # indexes them as it does messages sent live).
    sql(
        database_url,
        """INSERT INTO messages (from_user, room, content)
           SELECT %s, %s, 'number ' || n || ' ' || %s FROM generate_series(1, 120) AS n""",
        (alice.user_id, room, secret),
    )
    first = search(alice, secret)
    assert len(first) == 20  # the default page
    ids = [m["id"] for m in first]
    assert ids == sorted(ids, reverse=True)
    assert first[0]["content"] == f"number 120 {secret}"
    second = search(alice, secret, before=ids[-1], limit=5)
    assert [m["content"] for m in second] == [f"number {n} {secret}" for n in range(100, 95, -1)]
    assert len(search(alice, secret, limit=1000)) == 100  # capped


def test_emptied_and_edited_content_follows_the_index(connect, database_url):
    """A delete empties `content` and an edit changes it: the search vector is generated
    from it, so the old words are found no more."""
    old, new = word(), word()
    room = unique("erased")
    alice = connect()
    join(alice, room)
    erased = send(alice, room, f"{old} to erase")
    edited = send(alice, room, f"{old} to edit")
    sql(database_url, "UPDATE messages SET content = '' WHERE id = %s", (erased["id"],))
    sql(database_url, "UPDATE messages SET content = %s WHERE id = %s", (f"{new} now", edited["id"]))
    assert search(alice, old) == []
    assert [m["id"] for m in search(alice, new)] == [edited["id"]]


def test_a_public_room_may_be_searched_without_joining(connect):
    """Its history can be read without a join (history needs none), so it can be searched."""
    secret = word()
    room = unique("public")
    owner, visitor = connect(), connect()
    join(owner, room)
    sent = send(owner, room, f"open {secret}")
    assert search(visitor, secret, room=room) == [sent]
    assert search(visitor, secret) == []  # not a member: not in the default scope


def test_a_query_of_no_words_finds_nothing(connect):
    client = connect()
    assert search(client, "!!! ...") == []
    assert search(client, "-") == []


@pytest.mark.parametrize(
    "frame, code",
    [
        ({"type": "search"}, "invalid"),
        ({"type": "search", "query": "   "}, "invalid"),
        ({"type": "search", "query": 42}, "invalid"),
        ({"type": "search", "query": "x" * 257}, "invalid"),
        ({"type": "search", "query": "a\u0000b"}, "invalid"),
        ({"type": "search", "query": "a", "limit": 0}, "invalid"),
        ({"type": "search", "query": "a", "before": -1}, "invalid"),
        ({"type": "search", "query": "a", "room": "x", "with": 1}, "invalid"),
        ({"type": "search", "query": "a", "room": "no such room!"}, "invalid"),
        ({"type": "search", "query": "a", "room": "never-made-" + uuid.uuid4().hex}, "not_found"),
        ({"type": "search", "query": "a", "with": 2**62}, "not_found"),
    ],
)
def test_bad_searches_get_an_error_and_the_connection_stays_usable(connect, frame, code):
    client = connect()
    client.send(json.dumps(frame))  # (most are refused by the schema: sent raw)
    client.expect_error(code)
    client.send({"type": "ping"})
    client.expect("pong")
