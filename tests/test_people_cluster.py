"""`users` and DM typing across server processes: two instances sharing one PostgreSQL."""

from __future__ import annotations

import pytest

from tests.support.clients import Client
from tests.support.cluster import CLUSTER_ENV
from tests.support.databases import sql
from tests.support.identities import make_token, new_user_id, unique
from tests.support.servers import Server
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture
def pair(fresh_database):
    """Two instances of one worker each: two processes for sure."""
    database_url = fresh_database()
    servers = [Server(database_url, **CLUSTER_ENV).start() for _ in range(2)]
    yield servers
    for srv in servers:
        srv.stop()


def connect(srv: Server, user_id: int | None = None, username: str | None = None) -> Client:
    user_id = user_id or new_user_id()
    client = Client.connect(srv.url, make_token(user_id, username or f"user{user_id}"))
    client.expect("welcome")
    client.user_id, client.username = user_id, username or f"user{user_id}"
    return client


def online(client: Client, name: str) -> bool:
    client.send({"type": "users", "query": name})
    [found] = client.expect("users")["data"]
    return found["online"]


def test_dm_typing_reaches_the_recipient_on_another_process(pair):
    alice = connect(pair[0])
    alice_other = connect(pair[1], alice.user_id, alice.username)
    bob_there = connect(pair[1])
    bob_here = connect(pair[0], bob_there.user_id, bob_there.username)
    alice.send({"type": "typing", "to": bob_there.user_id})
    expected = {"type": "typing", "with": alice.user_id, "data": {"userId": alice.user_id, "username": alice.username}}
    assert bob_there.expect("typing") == expected
    assert bob_here.expect("typing") == expected
    alice_other.nothing_more("typing", wait=0.5)


def test_a_user_connected_to_another_process_in_no_room_is_online_until_gone(pair):
    name = unique("carol")
    carol = connect(pair[1], username=name)
    asker = connect(pair[0])
    assert online(asker, name)
    carol.close()
    wait_for(lambda: not online(asker, name), 5, "carol shown offline once her connection closed", pause=0.2)


def test_the_users_of_a_killed_process_go_offline_and_their_rows_are_buried(pair):
    name = unique("dora")
    connect(pair[1], username=name)
    asker = connect(pair[0])
    assert online(asker, name)
    database_url = pair[1].database_url
    assert sql(
        database_url,
        "SELECT count(*) FROM user_presence p JOIN users u ON u.id = p.user_id WHERE u.username = %s",
        (name,),
    ) == [(1,)]
    pair[1].stop(sig=9)  # no goodbye: the survivor buries it
    wait_for(lambda: not online(asker, name), 10, "dora shown offline once her process died", pause=0.2)
    wait_for(
        lambda: (
            sql(
                database_url,
                "SELECT count(*) FROM user_presence p JOIN users u ON u.id = p.user_id WHERE u.username = %s",
                (name,),
            )
            == [(0,)]
        ),
        10,
        "the dead process's user_presence rows removed",
    )
