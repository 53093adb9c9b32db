"""Rooms: how many a user may create, and the `rooms` list, over a real server."""

from __future__ import annotations

import pytest

from tests.support.clients import Client, join
from tests.support.databases import sql
from tests.support.identities import make_token, new_user_id, unique
from tests.support.servers import Server
from tests.support.waiting import wait_for


def connect(srv: Server, user_id: int) -> Client:
    client = Client.connect(srv.url, make_token(user_id, f"user{user_id}"))
    client.expect("welcome")
    return client


@pytest.mark.slow
def test_a_user_creates_at_most_the_configured_rooms_a_minute_over_all_connections(fresh_database):
    database_url = fresh_database()
    srv = Server(database_url, ROOMS_CREATE_PER_MINUTE="3").start()
    try:
        creator = new_user_id()
        first_tab, second_tab = connect(srv, creator), connect(srv, creator)
        made = [unique("made") for _ in range(3)]
        join(first_tab, made[0])
        join(second_tab, made[1])
        join(first_tab, made[2])
        one_too_many = unique("refused")
        second_tab.send({"type": "join", "room": one_too_many})
        error = second_tab.expect_error("rate_limited")
        assert (error["requestType"], error["room"]) == ("join", one_too_many)
        assert sql(database_url, "SELECT 1 FROM rooms WHERE name = %s", (one_too_many,)) == []
        # still usable: it joins an existing room and chats there
        assert join(second_tab, made[0])["data"]["status"] == "ok"
        second_tab.send({"type": "message", "room": made[0], "content": "still here"})
        assert second_tab.expect("message", room=made[0])["data"]["content"] == "still here"
        # the limit is the creator's alone
        other = connect(srv, new_user_id())
        assert join(other, one_too_many)["data"]["status"] == "ok"
        # a private room of the existing backend is still not_found, not rate_limited
        sql(database_url, "INSERT INTO rooms (name, is_private) VALUES ('members-only', true)")
        first_tab.send({"type": "join", "room": "members-only"})
        first_tab.expect_error("not_found")
    finally:
        srv.stop()


@pytest.mark.slow
def test_rooms_with_nobody_online_fill_the_list_by_name(fresh_database):
    """The most crowded first; the rest of ROOMS_LIST_MAX are empty rooms in name order
    (not the existing backend's private ones)."""
    database_url = fresh_database()
    sql(
        database_url,
        """INSERT INTO rooms (name, is_private) VALUES ('room-0', true), ('room-a', false),
           ('room-c', false), ('room-d', false)""",
    )
    srv = Server(database_url, ROOMS_LIST_MAX="3").start()
    try:
        alice = connect(srv, new_user_id())
        join(alice, "room-z")

        def listed() -> list[tuple[str, int]]:
            alice.send({"type": "rooms"})
            return [(room["name"], room["online"]) for room in alice.expect("rooms")["data"]]

        expected = [("room-a", 0), ("room-c", 0), ("room-z", 1)]
        # (the list is read at most once a second: until then an older one may come)
        wait_for(lambda: listed() == expected, 5, "the crowded room, then empty ones by name", pause=0.2)
    finally:
        srv.stop()
