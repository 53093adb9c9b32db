"""Finding people (`users`) and typing in a DM, over a real server and real clients."""

from __future__ import annotations

from tests.support.databases import sql
from tests.support.identities import new_user_id, unique
from tests.support.waiting import wait_for


def add_users(database_url: str, *names: str) -> list[int]:
    """Users with a row and no connection (offline), as the other backend makes them."""
    ids = []
    for name in names:
        user_id = new_user_id()
        sql(database_url, "INSERT INTO users (id, username) VALUES (%s, %s)", (user_id, name))
        ids.append(user_id)
    return ids


def find(client, **request) -> list[dict]:
    client.send({"type": "users", **request})
    return client.expect("users")["data"]


# --- users -------------------------------------------------------------------------------------------


def test_users_finds_by_name_start_any_case_online_first(connect, database_url):
    base = unique("pp")
    a, b, c = add_users(database_url, f"{base}a", f"{base.upper()}B", f"{base}c")
    add_users(database_url, f"x{base}")  # the query is inside this name, not at its start
    zed = connect(username=f"{base}Z")  # online, though in no room
    asker = connect()
    assert find(asker, query=base.upper()) == [
        {"userId": zed.user_id, "username": f"{base}Z", "online": True},
        {"userId": a, "username": f"{base}a", "online": False},
        {"userId": b, "username": f"{base.upper()}B", "online": False},
        {"userId": c, "username": f"{base}c", "online": False},
    ]
    zed.close()
    wait_for(lambda: not find(asker, query=f"{base}z")[0]["online"], 5, "the closed user shown offline", pause=0.2)


def test_users_online_while_any_connection_of_the_user_is_open(connect):
    base = unique("tabs")
    first = connect(username=base)
    second = connect(user_id=first.user_id, username=base)
    asker = connect()
    first.close()
    asker.send({"type": "ping"})
    asker.expect("pong")
    assert find(asker, query=base) == [{"userId": first.user_id, "username": base, "online": True}]
    second.close()
    wait_for(lambda: not find(asker, query=base)[0]["online"], 5, "offline once the last tab closed", pause=0.2)


def test_users_query_matches_like_characters_literally(connect, database_url):
    base = unique("esc")
    underscore, percent, backslash, _ = add_users(database_url, f"{base}_u", f"{base}%p", f"{base}\\b", f"{base}xx")
    asker = connect()
    assert [u["userId"] for u in find(asker, query=f"{base}_")] == [underscore]
    assert [u["userId"] for u in find(asker, query=f"{base}%")] == [percent]
    assert [u["userId"] for u in find(asker, query=f"{base}\\")] == [backslash]
    assert len(find(asker, query=base)) == 4


def test_users_limit_defaults_to_20_and_is_capped_at_100(connect, database_url):
    base = unique("many")
    ids = add_users(database_url, *(f"{base}{index:03}" for index in range(105)))
    asker = connect()
    assert [u["userId"] for u in find(asker, query=base)] == ids[:20]
    assert [u["userId"] for u in find(asker, query=base, limit=3)] == ids[:3]
    assert len(find(asker, query=base, limit=1000)) == 100


def test_users_with_an_empty_query_lists_everyone_online_first(connect, database_url):
    add_users(database_url, *(unique("anyone") for _ in range(25)))
    asker = connect()
    everyone = find(asker, query="", limit=100)
    assert everyone == find(asker, limit=100)
    assert len(everyone) == 100
    online = [user["online"] for user in everyone]
    assert online[0] and online == sorted(online, reverse=True)


def test_users_query_in_another_unicode_form_finds_the_name(connect, database_url):
    base = unique("uni")
    [emile] = add_users(database_url, f"{base}\u00c9mile")  # É, composed (as names are stored)
    asker = connect()
    assert [u["userId"] for u in find(asker, query=f"{base}em")] == []  # e is not é
    assert [u["userId"] for u in find(asker, query=f"{base}e\u0301M")] == [emile]  # é decomposed, any case


# --- typing in a DM ----------------------------------------------------------------------------------


def test_dm_typing_reaches_every_connection_of_the_recipient_only(connect):
    alice = connect()
    alice_other = connect(user_id=alice.user_id, username=alice.username)
    bob = connect()
    bob_other = connect(user_id=bob.user_id, username=bob.username)
    alice.send({"type": "typing", "to": bob.user_id})
    expected = {"type": "typing", "with": alice.user_id, "data": {"userId": alice.user_id, "username": alice.username}}
    assert bob.expect("typing") == expected
    assert bob_other.expect("typing") == expected
    alice_other.nothing_more("typing", wait=0.4)
    alice.nothing_more("typing", wait=0.1)


def test_dm_typing_to_oneself_or_to_someone_offline_tells_nobody_and_is_no_error(connect, database_url):
    alice = connect()
    alice_other = connect(user_id=alice.user_id, username=alice.username)
    [offline] = add_users(database_url, unique("away"))
    alice.send({"type": "typing", "to": alice.user_id})
    alice.send({"type": "typing", "to": str(offline)})
    alice.send({"type": "ping"})
    alice.expect("pong")
    assert [frame for frame in alice.seen if frame["type"] == "error"] == []
    alice_other.nothing_more("typing", wait=0.4)


def test_dm_typing_to_an_unknown_user_is_not_found_and_the_connection_stays_usable(connect):
    alice = connect()
    bob = connect()
    alice.send({"type": "typing", "to": 999_999_999_998})
    error = alice.expect_error("not_found")
    assert error["requestType"] == "typing" and error["to"] == 999_999_999_998
    alice.send({"type": "typing", "to": bob.user_id})
    assert bob.expect("typing")["with"] == alice.user_id


def test_a_crowd_dropped_at_once_goes_offline_but_who_stays_or_comes_back_does_not(connect):
    """Their rows are removed many a statement (a network blip drops thousands at once),
    each still under its user's lock: a user with a tab left, or back at once, stays online."""
    base = unique("blip")
    crowd = [connect(username=f"{base}{n:02}") for n in range(30)]
    stays = connect(user_id=crowd[0].user_id, username=f"{base}00")  # a second tab
    asker = connect()
    for client in crowd:
        client.close()
    back = connect(user_id=crowd[1].user_id, username=f"{base}01")

    def online() -> list[str]:
        return [user["username"] for user in find(asker, query=base, limit=100) if user["online"]]

    wait_for(lambda: online() == [f"{base}00", f"{base}01"], 10, "all but two shown offline", pause=0.2)
    stays.close()
    back.close()
    wait_for(lambda: online() == [], 10, "the last two shown offline", pause=0.2)


def test_a_lost_online_row_is_written_again_by_the_heartbeat(connect, database_url):
    """As after the other processes buried this one (its heartbeat late): rows gone, users here."""
    name = unique("back")
    user = connect(username=name)
    asker = connect()
    sql(database_url, "DELETE FROM user_presence WHERE user_id = %s", (user.user_id,))
    assert not find(asker, query=name)[0]["online"]
    wait_for(lambda: find(asker, query=name)[0]["online"], 10, "the row written again", pause=0.2)
