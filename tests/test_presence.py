"""Presence's heartbeat in this process, over a real database: how its reconcile repairs
a failure or a burial, while joins and leaves go on."""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import gevent
import gevent.event
import orjson
import psycopg2
import pytest

from app import db, runtime
from app.bus import PostgresBus
from app.errors import Unavailable
from app.hub import Hub
from app.membership import Memberships
from app.online import OnlineLists, RoomOnline
from app.presence import ALIVE, Joins, OnlineListReads, Presence, Tends
from tests.support.databases import sql
from tests.support.waiting import wait_for

ALICE, BOB = (1, "alice"), (2, "bob")


@pytest.fixture
def presence(fresh_database):
    """(presence, url, events): a node's Presence; `events` gets what it announces."""
    db.make_cooperative()
    url = fresh_database()
    sql(url, "INSERT INTO rooms (name) VALUES ('lobby')")
    sql(url, "INSERT INTO chat_members (room, user_id) VALUES ('lobby', 1), ('lobby', 2)")  # alice, bob
    pool = db.Pool(url, size=2, setup=runtime.prepare_pool_statements)
    bus = PostgresBus(
        url, pool, origin="n1", deployment="d1", on_payload=print, on_connected=lambda: None, peer_hold_seconds=10
    )
    events: list[tuple[str, int]] = []
    node = Presence(pool, bus, "n1", 10.0, lambda event: events.append((event["event"], event["userId"])))
    yield node, url, events
    pool.close()


def lose_answers_after_commit(pool, monkeypatch):
    """From now on the pool's statements commit, then their connection is lost (their
    callers get `unavailable`); returns what undoes it."""
    autocommit = pool.autocommit

    @contextmanager
    def lost_after_the_commit():
        with autocommit() as cur:
            yield cur
        raise Unavailable("connection lost")

    monkeypatch.setattr(pool, "autocommit", lost_after_the_commit)
    return lambda: monkeypatch.setattr(pool, "autocommit", autocommit)


def rows(url: str) -> list[tuple[str, int]]:
    return sql(url, "SELECT node_id, user_id FROM room_presence ORDER BY user_id")


def test_users_are_written_again_until_every_one_is(presence, monkeypatch):
    """A node's reconcile writes the rows of its connections' users; a write failing
    leaves its rows for the next heartbeat, which writes them."""
    node, url, _ = presence
    here = {("lobby", ALICE[0]): ALICE[1], ("lobby", BOB[0]): BOB[1]}
    node.user_here = lambda user_id, room: True
    enter_many = node._enter_many

    def fails_once(entering):
        if not failed:
            failed.append(entering)
            raise Unavailable("database is busy")
        return enter_many(entering)

    failed: list = []
    monkeypatch.setattr(node, "_enter_many", fails_once)
    with pytest.raises(Unavailable):
        node.heartbeat(lambda: here)
    assert rows(url) == []
    node.heartbeat(lambda: here)
    assert rows(url) == [("n1", ALICE[0]), ("n1", BOB[0])]


class Recording:
    """A cursor that notes the presence writes it runs."""

    def __init__(self, cur, noted: list) -> None:
        self.cur, self.noted = cur, noted

    def execute(self, query, *args):
        if any(name in query for name in ("chat_enter", "chat_join", "chat_leave")):
            self.noted.append(query)
        return self.cur.execute(query, *args)

    def __getattr__(self, name):
        return getattr(self.cur, name)


@contextmanager
def recording_writes(node: Presence):
    """The presence writes of the node's pool while the block runs (Recording)."""
    writes: list[str] = []
    autocommit = node.pool.autocommit

    @contextmanager
    def recorded():
        with autocommit() as cur:
            yield Recording(cur, writes)

    node.pool.autocommit = recorded
    try:
        yield writes
    finally:
        node.pool.autocommit = autocommit


def test_the_rows_of_many_connects_are_written_by_one_statement(presence):
    """tend_many writes every (room, user) it is given at once, each announced as tend
    would: the first row of a user anywhere is a join, a row already there changes
    nothing, a member no more gets none, and the room's count of users online follows."""
    node, url, events = presence
    sql(url, "INSERT INTO rooms (name) VALUES ('den')")
    sql(url, "INSERT INTO chat_members (room, user_id) VALUES ('den', 1)")
    sql(url, "INSERT INTO chat_nodes (node_id) VALUES ('n2')")
    sql(url, "INSERT INTO room_presence (room, user_id, node_id, username) VALUES ('den', 1, 'n2', 'alice')")
    sql(url, "INSERT INTO room_online (room, online) VALUES ('den', 1)")
    node.user_here = lambda user_id, room: True
    with recording_writes(node) as writes:
        node.tend_many([("lobby", *ALICE), ("lobby", *BOB), ("den", *ALICE), ("den", *BOB)])
    assert len(writes) == 1
    assert sql(url, "SELECT room, user_id, node_id FROM room_presence ORDER BY 1, 2, 3") == [
        ("den", 1, "n1"),
        ("den", 1, "n2"),
        ("lobby", 1, "n1"),
        ("lobby", 2, "n1"),
    ]
    # alice was online in den already (on n2): only the lobby hears of her, and of bob
    assert sorted(events) == [("join", ALICE[0]), ("join", BOB[0])]
    assert sql(url, "SELECT room, online FROM room_online ORDER BY 1") == [("den", 1), ("lobby", 2)]
    node.tend_many([("lobby", *ALICE), ("lobby", *BOB)])
    assert len(events) == 2


def test_the_heartbeat_leaves_the_rows_queued_for_writing_to_the_queue(presence):
    """Behind a crowd connecting, the rows waiting in the queue of tends would all look
    missing to the reconcile, and be written twice: it writes only the others."""
    node, url, events = presence
    node.user_here = lambda user_id, room: True
    taken, release, writing = gevent.event.Event(), gevent.event.Event(), []

    def held_back(pairs):
        writing.append(pairs)
        taken.set()
        release.wait()
        node.tend_many(pairs)

    node._tends.tend_many = held_back
    node.tend_soon([("lobby", *ALICE)])
    assert taken.wait(5)  # the queue's runner takes alice's row, and waits
    assert writing == [[("lobby", *ALICE)]]
    node.heartbeat(lambda: {("lobby", ALICE[0]): ALICE[1], ("lobby", BOB[0]): BOB[1]})
    assert rows(url) == [("n1", BOB[0])]
    release.set()
    wait_for(lambda: rows(url) == [("n1", ALICE[0]), ("n1", BOB[0])], 5, "alice's row written by the queue")
    # (her join is announced, and her row leaves the queue, after the commit that another
    # connection sees first)
    wait_for(lambda: sorted(events) == [("join", ALICE[0]), ("join", BOB[0])], 5, "alice's join announced once")
    wait_for(lambda: not node._tends.pending, 5, "written: the next reconcile checks it again")
    gevent.sleep(0.2)
    assert sorted(events) == [("join", ALICE[0]), ("join", BOB[0])]  # and no second time


def test_a_user_who_left_meanwhile_is_not_written_again(presence):
    node, url, events = presence
    here = {("lobby", ALICE[0]): ALICE[1], ("lobby", BOB[0]): BOB[1]}
    # Bob left between the listing and his turn: the hub no longer has him in the room.
    node.user_here = lambda user_id, room: user_id != BOB[0]
    node.heartbeat(lambda: here)
    assert rows(url) == [("n1", ALICE[0])]
    assert ("join", BOB[0]) not in events


def test_the_rows_are_compared_again_only_after_something_may_have_changed_them(presence):
    """Reading every row of the node each beat costs a fifth of a second at 10,000 users:
    a beat compares after a database failure, a late beat or a burial (or once a minute),
    and a row removed behind the node's back with none of those stays missing until then."""
    node, url, _ = presence
    here = {("lobby", ALICE[0]): ALICE[1]}
    node.user_here = lambda user_id, room: True
    node.heartbeat(lambda: here)  # the first compares
    assert rows(url) == [("n1", ALICE[0])]

    def removed_then_beat() -> list:
        sql(url, "DELETE FROM room_presence")
        node.heartbeat(lambda: here)
        return rows(url)

    assert removed_then_beat() == []  # nothing said the rows could differ
    with pytest.raises(Unavailable), node.pool.autocommit() as cur:
        cur.execute("SELECT pg_terminate_backend(pg_backend_pid())")  # a connection lost
    node.heartbeat(lambda: here)
    assert rows(url) == [("n1", ALICE[0])]
    assert removed_then_beat() == []
    node._beaten_at -= node.node_timeout  # the last beat was long ago: the others may have buried us
    node.heartbeat(lambda: here)
    assert rows(url) == [("n1", ALICE[0])]
    assert removed_then_beat() == []
    sql(url, "DELETE FROM chat_nodes WHERE node_id = 'n1'")  # buried: the node's row gone too
    node.heartbeat(lambda: here)
    assert rows(url) == [("n1", ALICE[0])]


def test_a_row_of_a_user_with_no_connection_here_is_removed_and_announced(presence, monkeypatch):
    """A leave that could not be written leaves a row no connection stands for: the next
    heartbeat removes it and announces the leave."""
    node, url, events = presence
    node.after_commit(node.join("lobby", *BOB, create_room=False).announced)
    away = lose_answers_after_commit(node.pool, monkeypatch)
    away()  # (undone at once: only the heartbeat's own statements run below)
    node.heartbeat(dict)
    assert rows(url) == []
    assert events == [("join", BOB[0]), ("leave", BOB[0])]


def test_a_member_no_more_gets_no_row(presence):
    """The reconcile writes rows for members only: a connection here whose membership
    ended elsewhere (the news still on the bus) makes no row, and announces nothing."""
    node, url, events = presence
    sql(url, "DELETE FROM chat_members WHERE user_id = %s", (BOB[0],))
    node.user_here = lambda user_id, room: True
    node.heartbeat(lambda: {("lobby", BOB[0]): BOB[1]})
    assert rows(url) == [] and events == []


def test_a_buried_nodes_leaves_are_announced_even_after_a_failure(presence, monkeypatch):
    node, url, events = presence
    sql(url, "INSERT INTO chat_nodes (node_id, heartbeat_at) VALUES ('dead', now() - interval '1 hour')")
    sql(url, "INSERT INTO room_presence (room, user_id, node_id, username) VALUES ('lobby', 2, 'dead', 'bob')")
    leave = node._leave

    def fails_once(*args, **kwargs):
        if not failed:
            failed.append(1)
            raise Unavailable("database is busy")
        return leave(*args, **kwargs)

    failed: list[int] = []
    monkeypatch.setattr(node, "_leave", fails_once)
    with pytest.raises(Unavailable):
        node.heartbeat(dict)  # buries 'dead'; the leave fails: its row stays, the list of what is left
    assert rows(url) == [("dead", BOB[0])]
    node.heartbeat(dict)
    assert rows(url) == [] and ("leave", BOB[0]) in events
    assert sql(url, "SELECT node_id FROM chat_nodes WHERE node_id = 'dead'") == []


def test_an_event_noted_while_the_list_is_read_is_not_lost_with_the_old_list(presence, monkeypatch):
    """The read's snapshot may come before a join committed elsewhere, whose event is noted
    here while the query runs: the read then replaced the list the event went into, and
    every joiner of the next second was told the user was not there (and never learned)."""

    from app import online as online_module

    node, url, _ = presence
    node.online.get("lobby")  # a list to note events in
    node.online.by_room["lobby"].max_age_seconds = 0  # every call reads again

    class SlowRoomOnline(online_module.RoomOnline):
        """Built from rows fetched: the snapshot is taken; now others get to run."""

        def __init__(self, users: dict[int, str]) -> None:
            super().__init__(users)
            gevent.sleep(0.05)

    def another_node_joins_bob() -> None:
        sql(url, "INSERT INTO room_presence (room, user_id, node_id, username) VALUES ('lobby', 2, 'n2', 'bob')")
        node.online.note("lobby", "join", *BOB)

    monkeypatch.setattr(online_module, "RoomOnline", SlowRoomOnline)
    joining = gevent.spawn_later(0.01, another_node_joins_bob)
    online = node.online.get("lobby")
    joining.join()
    assert 2 in online.users


def test_a_list_read_again_after_the_bus_was_away_tells_what_changed(presence):
    """Events another node announced while our bus was away never reach us: reading the
    room's list again tells the members here the difference, once."""
    node, url, events = presence
    sql(url, "INSERT INTO chat_nodes (node_id) VALUES ('n2')")  # alive: its rows count
    node.online.get("lobby")  # what the members here were told: nobody
    sql(url, "INSERT INTO room_presence (room, user_id, node_id, username) VALUES ('lobby', 1, 'n2', 'alice')")
    node.repair_unheard()
    assert events == []  # no room marked: nothing read
    node.online.mark_unheard(["lobby"])
    node.repair_unheard()
    assert events == [("join", ALICE[0])] and node.online.unheard_rooms == set()
    sql(url, "UPDATE room_presence SET user_id = 2, username = 'bob' WHERE user_id = 1")
    node.online.mark_unheard(["lobby"])
    node.repair_unheard()
    assert events[1:] == [("leave", ALICE[0]), ("join", BOB[0])]
    assert not node.online.note("lobby", "join", *BOB)  # then heard late: not news
    assert node.online.note("lobby", "leave", *BOB)


def test_a_user_joined_here_whose_row_the_others_removed_is_not_told_gone(presence):
    """Buried while it could not beat, a node has its rows removed by the others until its
    heartbeat writes them again: a list read meanwhile lacks its own users, who are still
    here (and back in the table shortly), not gone."""
    node, url, events = presence
    sql(url, "INSERT INTO chat_nodes (node_id) VALUES ('n1'), ('n2')")
    sql(url, "INSERT INTO room_presence (room, user_id, node_id) VALUES ('lobby', 1, 'n1'), ('lobby', 2, 'n2')")
    node.online.get("lobby")
    node.online.here = lambda user_id, room: user_id == ALICE[0]
    sql(url, "DELETE FROM room_presence")  # both gone from the table: Bob has left
    node.online.mark_unheard(["lobby"])
    node.repair_unheard()
    assert events == [("leave", BOB[0])]
    assert set(node.online.get("lobby").users) == {ALICE[0]}


def tell_news_only(node: Presence) -> list[tuple[str, int]]:
    """Make the node deliver events as runtime.deliver_event does, only those that are news
    to the members here; returns what they are told."""
    told: list[tuple[str, int]] = []

    def deliver(event: dict) -> None:
        if node.hear(event):
            told.append((event["event"], event["userId"]))

    node.deliver_event = node.online.tell = deliver
    return told


def crowded_lobby(node: Presence, url: str, heard_on_n2: int) -> list[tuple[str, int]]:
    """Make the lobby too crowded for presence (more than two online: alice, bob, carol),
    each user's row on node n1 but one's, on node n2, whose join was heard before the room
    grew crowded; returns what the members here are told from now on (tell_news_only)."""
    told = tell_news_only(node)
    node.max_announced_room_size = node.online.max_announced_room_size = 2
    sql(url, "INSERT INTO chat_members (room, user_id) VALUES ('lobby', 3)")
    sql(url, "INSERT INTO chat_nodes (node_id) VALUES ('n1'), ('n2')")
    for user_id, username in (ALICE, BOB, (3, "carol")):
        heard = user_id == heard_on_n2
        sql(
            url,
            "INSERT INTO room_presence (room, user_id, node_id, username, announced) VALUES ('lobby', %s, %s, %s, %s)",
            (user_id, "n2" if heard else "n1", username, heard),
        )
    return told


def test_a_dead_nodes_user_whose_join_was_heard_is_told_gone_from_a_crowded_room(presence):
    """The burial reads the list of a room too crowded for presence (dead nodes' rows are
    not in it) before it removes the row: the read tells nobody anything, and the leave
    of a user whose join the room heard, announced then, is still news here."""
    node, url, _ = presence
    told = crowded_lobby(node, url, heard_on_n2=ALICE[0])
    assert set(node.online.get("lobby").users) == {1, 2, 3}  # what the members here were told
    node.online.by_room["lobby"].max_age_seconds = 0  # the burial reads the list again
    sql(url, "UPDATE chat_nodes SET heartbeat_at = now() - interval '1 hour' WHERE node_id = 'n2'")
    node.user_here = lambda user_id, room: True
    node.heartbeat(lambda: {("lobby", 2): "bob", ("lobby", 3): "carol"})
    assert rows(url) == [("n1", 2), ("n1", 3)]
    assert told == [("leave", ALICE[0])]


def test_a_user_told_gone_while_their_row_here_waits_is_told_back_in_a_crowded_room(presence):
    """Bob's join was heard before the room grew too crowded for presence. He opens a tab
    here, and his tab on the other node closes before this node writes his row (Tends):
    that node announces his leave, his last anywhere then. His row here, once written,
    announces his join, or the room would take him for gone while he is here."""
    node, url, _ = presence
    told = crowded_lobby(node, url, heard_on_n2=BOB[0])
    assert set(node.online.get("lobby").users) == {1, 2, 3}
    node.user_here = lambda user_id, room: True  # bob's new tab is here
    release, written = gevent.event.Event(), gevent.event.Event()

    def held_back(pairs):
        release.wait()
        node.tend_many(pairs)
        written.set()

    node._tends.tend_many = held_back  # his row waits
    node.tend_soon([("lobby", *BOB)])
    # his tab on n2 closes: n2 removes its row and announces his leave, heard here
    heard: list[dict] = []
    other = Presence(node.pool, node.bus, "n2", 10.0, heard.append)
    other.max_announced_room_size = other.online.max_announced_room_size = 2
    other.leave("lobby", *BOB)
    assert [(event["event"], event["userId"]) for event in heard] == [("leave", BOB[0])]
    node.deliver_event(heard[0])
    assert told == [("leave", BOB[0])]
    release.set()
    assert written.wait(5)
    assert told == [("leave", BOB[0]), ("join", BOB[0])]
    assert set(node.online.get("lobby").users) == {1, 2, 3}
    assert sql(url, "SELECT node_id, announced FROM room_presence WHERE user_id = 2") == [("n1", True)]


def test_a_leave_that_finds_the_row_removed_leaves_the_removers_event_news(presence):
    """Two nodes burying one dead node at once: the second's leave finds the row gone and
    changes nothing, so the first one's leave, heard after it, is still told here."""
    node, url, _ = presence
    told = tell_news_only(node)
    sql(url, "INSERT INTO chat_nodes (node_id) VALUES ('n2')")
    sql(
        url,
        """INSERT INTO room_presence (room, user_id, node_id, username, announced)
           VALUES ('lobby', 1, 'n2', 'alice', true)""",
    )
    assert set(node.online.get("lobby").users) == {ALICE[0]}
    sql(url, "UPDATE chat_nodes SET heartbeat_at = now() - interval '1 hour' WHERE node_id = 'n2'")
    the_others = node._leave("lobby", *ALICE, "n2")  # another node's burial: its event is on the bus
    node.after_commit(node._leave("lobby", *ALICE, "n2"))  # ours
    node.after_commit(the_others)  # heard
    assert told == [("leave", ALICE[0])]


def test_a_join_is_answered_from_the_list_as_it_stands_now(presence):
    """A join reads the list before its statement; another greenlet may read it again
    meanwhile, and the events noted from then on go into that newer list only."""
    node, url, _ = presence
    sql(url, "INSERT INTO chat_nodes (node_id) VALUES ('n1')")  # alive: its rows count
    node.online.max_age_seconds = 0
    entered = node.join("lobby", *ALICE, create_room=False)
    node.online.get("lobby")  # read again by someone else
    node.online.note("lobby", "join", *BOB)
    assert set(node.online.now("lobby", entered.online).users) == {1, 2}
    assert 2 not in entered.online.users


def test_a_crowd_joining_a_room_is_written_by_a_few_statements_each_join_told_as_if_alone(presence):
    """First joins queued while a statement runs share the next one: forty people joining
    a room at once become forty memberships and presence rows, each announced once with
    a number of its own, the room counted forty online, in far fewer than forty statements
    (one each held the room's count and the notification queue through its commit)."""
    node, url, _ = presence
    sql(url, "INSERT INTO rooms (name) VALUES ('hall')")
    sql(url, "INSERT INTO chat_nodes (node_id) VALUES ('n1')")
    crowd = [(100 + n, f"user{n}") for n in range(40)]
    with recording_writes(node) as writes:
        joins = [gevent.spawn(node.join, "hall", user_id, name, False) for user_id, name in crowd]
        gevent.joinall(joins, timeout=20, raise_error=True)

    entered = [join.value for join in joins]
    assert all(e is not None and e.new_member for e in entered)
    assert 1 <= min(e.members for e in entered) and max(e.members for e in entered) == 40
    announced = [e.announced for e in entered]
    assert all(len(a) == 1 and a[0]["event"] == "join" for a in announced)
    assert sorted(a[0]["userId"] for a in announced) == [user_id for user_id, _ in crowd]
    assert len({a[0]["v"] for a in announced}) == 40
    assert sql(url, "SELECT online FROM room_online WHERE room = 'hall'") == [(40,)]
    assert sql(url, "SELECT count(*) FROM chat_members WHERE room = 'hall'") == [(40,)]
    assert sql(url, "SELECT count(*) FROM room_presence WHERE room = 'hall' AND node_id = 'n1'") == [(40,)]
    assert len(writes) <= 10, f"{len(writes)} statements for 40 joins"
    # Joined again (a second tab, say): nothing new, nobody told.
    again = [gevent.spawn(node.join, "hall", user_id, name, False) for user_id, name in crowd[:5]]
    gevent.joinall(again, timeout=20, raise_error=True)
    assert all(not join.value.new_member and join.value.announced == [] for join in again)
    assert all(join.value.members == 40 for join in again)
    assert sql(url, "SELECT online FROM room_online WHERE room = 'hall'") == [(40,)]


def test_a_join_of_a_missing_or_private_room_in_a_crowd_gets_no_room_and_sinks_no_other(presence):
    """A batch answers each join for itself: a room that does not exist, or is private
    with the user no member, is not found (created when asked), the others are joined."""
    node, url, _ = presence
    sql(url, "INSERT INTO rooms (name, is_private) VALUES ('hall', false), ('vault', true)")
    sql(url, "INSERT INTO chat_members (room, user_id, role) VALUES ('vault', 7, 'owner')")
    asks = [("hall", 101), ("nowhere", 102), ("vault", 103), ("vault", 7), ("hall", 104)]
    joins = [gevent.spawn(node.join, room, user_id, f"u{user_id}", False) for room, user_id in asks]
    gevent.joinall(joins, timeout=20, raise_error=True)
    found = {ask: join.value for ask, join in zip(asks, joins, strict=True)}
    assert found[("nowhere", 102)] is None and found[("vault", 103)] is None
    assert found[("hall", 101)].new_member and found[("hall", 104)].new_member
    assert not found[("vault", 7)].new_member and found[("vault", 7)].owner == 7
    assert sql(url, "SELECT room, user_id FROM chat_members WHERE room <> 'lobby' ORDER BY 1, 2") == [
        ("hall", 101),
        ("hall", 104),
        ("vault", 7),
    ]
    created = gevent.spawn(node.join, "nowhere", 102, "u102", True)
    assert created.get(timeout=10).new_member and sql(url, "SELECT 1 FROM rooms WHERE name = 'nowhere'") == [(1,)]


def test_a_batch_of_joins_that_fails_is_written_again_one_by_one(presence, monkeypatch):
    """A statement error in a batch (something in one join, not the database away) is
    that join's alone: the batch is written again join by join."""
    node, url, _ = presence
    sql(url, "INSERT INTO rooms (name) VALUES ('hall')")

    def broken_batch(self, requests):
        raise psycopg2.errors.DataError("something in one of them")

    one = Joins._one

    def one_broken(self, request):
        if request.user_id == 103:
            raise psycopg2.errors.DataError("this one")
        return one(self, request)

    monkeypatch.setattr(Joins, "_many", broken_batch)
    monkeypatch.setattr(Joins, "_one", one_broken)
    joins = [gevent.spawn(node.join, "hall", user_id, f"u{user_id}", False) for user_id in (101, 102, 103, 104)]
    gevent.joinall(joins, timeout=20)
    assert isinstance(joins[2].exception, psycopg2.errors.DataError)
    assert all(join.successful() and join.value.new_member for join in joins[:2] + joins[3:])
    assert sql(url, "SELECT user_id FROM chat_members WHERE room = 'hall' ORDER BY 1") == [(101,), (102,), (104,)]


def test_a_join_committed_but_not_answered_is_undone_by_the_heartbeat(presence, monkeypatch):
    """The connection to PostgreSQL is lost after the join's commit: the joiner got
    `unavailable` and is not listed here, but its row stood, online for good."""
    node, url, events = presence
    node.online.get("lobby")  # read now: the join's own statement is the one that fails
    restore = lose_answers_after_commit(node.pool, monkeypatch)
    with pytest.raises(Unavailable):
        node.join("lobby", *ALICE, create_room=False)

    @contextmanager
    def away():
        raise Unavailable("database is away")
        yield

    monkeypatch.setattr(node.pool, "autocommit", away)
    with pytest.raises(Unavailable):  # and one that was not committed: nothing to undo
        node.join("lobby", *BOB, create_room=False)
    restore()
    assert rows(url) == [("n1", ALICE[0])]
    node.heartbeat(dict)
    assert rows(url) == []
    assert ("leave", ALICE[0]) in events and ("leave", BOB[0]) not in events


def test_a_users_events_are_numbered_in_commit_order_and_older_ones_refused(presence, monkeypatch):
    """Each announced join and leave carries its number; an event older than one applied
    about the same user and room is refused, until it is too old to remember."""
    import app.presence as presence_module

    node, _, _ = presence
    announced: list[dict] = []
    monkeypatch.setattr(node, "after_commit", announced.extend)
    node.after_commit(node.join("lobby", *ALICE, create_room=False).announced)
    node.leave("lobby", *ALICE)
    node.after_commit(node.join("lobby", *ALICE, create_room=False).announced)
    joined, left, joined_again = announced
    assert joined["v"] < left["v"] < joined_again["v"]
    assert node.in_order(joined) and node.in_order(joined_again)
    assert not node.in_order(left)  # heard last, committed before the join applied
    assert node.in_order({**left, "userId": BOB[0]})  # another user's events are their own
    assert node.in_order({"room": "lobby", "userId": ALICE[0]})  # unnumbered: applied
    now = presence_module.time.monotonic()
    monkeypatch.setattr(presence_module.time, "monotonic", lambda: now + presence_module.EVENT_ORDER_MEMORY_SECONDS + 1)
    assert node.in_order({**left, "userId": 99})  # (heard now: the older ones are forgotten)
    assert node.in_order(left)


def test_a_leave_that_removes_no_row_announces_nothing(presence):
    """Two tabs of a user leaving at once, one waiting for the other's (room, user) lock,
    may both find the user gone from the hub and both run the leave (so may a leave
    retried after a failure that was committed after all): only the one that removed
    the row announces it."""
    node, _, events = presence
    node.after_commit(node.join("lobby", *ALICE, create_room=False).announced)
    node.leave("lobby", *ALICE)
    node.leave("lobby", *ALICE)
    assert events == [("join", ALICE[0]), ("leave", ALICE[0])]


@pytest.mark.slow
def test_a_long_heartbeat_keeps_the_node_alive_while_it_writes(presence, monkeypatch):
    """Writing thousands of users again after a burial takes longer than the node
    timeout: the node must stay alive meanwhile, or the others bury it again, and again."""

    import app.presence as presence_module

    _, url, _ = presence
    node = Presence(presence[0].pool, presence[0].bus, "n1", 1.0, lambda event: None)
    here = {("lobby", 100 + n): f"user{n}" for n in range(8)}
    sql(url, "INSERT INTO chat_members (room, user_id) SELECT 'lobby', 100 + g FROM generate_series(0, 7) g")
    node.user_here = lambda user_id, room: True
    enter_many = node._enter_many

    def slow_enter_many(*args, **kwargs):
        gevent.sleep(0.25)  # a busy database: 2 s for the 8 statements
        return enter_many(*args, **kwargs)

    monkeypatch.setattr(presence_module, "TEND_BATCH_MAX", 1)  # thousands of users: many statements
    monkeypatch.setattr(node, "_enter_many", slow_enter_many)
    alive_seen: list[bool] = []

    def watch() -> None:
        while True:
            gevent.sleep(0.1)
            alive_seen.append(bool(sql(url, f"SELECT 1 FROM ({ALIVE}) alive", {"alive_seconds": 1.0})))

    watcher = gevent.spawn(watch)
    try:
        node.heartbeat(lambda: here)  # new: writes all 8
    finally:
        watcher.kill()
    assert len(alive_seen) > 15 and all(alive_seen)
    assert sorted(row[1] for row in rows(url)) == sorted(user_id for _, user_id in here)


def test_a_leave_committed_but_not_answered_is_told_here_by_the_heartbeat(presence, monkeypatch):
    """The connection is lost after the leave's commit (announced inside it on the
    PostgreSQL bus, to the other nodes): this node's members never heard it, and are
    told once the heartbeat reads the room's list again."""
    node, url, events = presence
    sql(url, "INSERT INTO chat_nodes (node_id) VALUES ('n1')")  # alive: its rows count
    node.after_commit(node.join("lobby", *ALICE, create_room=False).announced)
    node.online.note("lobby", "join", *ALICE)  # told here, as the runtime's deliver_event does
    restore = lose_answers_after_commit(node.pool, monkeypatch)
    with pytest.raises(Unavailable):
        node.leave("lobby", *ALICE)
    restore()
    assert rows(url) == []
    node.heartbeat(dict)
    node.repair_unheard()
    assert events == [("join", ALICE[0]), ("leave", ALICE[0])]


def test_the_rooms_online_counts_stay_exact_through_joins_leaves_and_burials(presence):
    """room_online counts each room's users with a row, whichever node: a user's first row
    counts, their last uncounts, and a burial counts its rooms again, also while a join
    of one of the dead node's users runs on a live node (the burial waits for its rows)."""
    from gevent.event import Event

    from app.presence import _JOIN

    node, url, _ = presence
    other = Presence(node.pool, node.bus, "n2", 10.0, lambda event: None)
    carol = (3, "carol")
    sql(url, "INSERT INTO rooms (name) VALUES ('side')")
    sql(url, "INSERT INTO chat_nodes (node_id) VALUES ('n1'), ('n2')")

    def counts() -> dict[str, int]:
        listed = dict(sql(url, "SELECT room, online FROM room_online WHERE online <> 0"))
        rows = dict(sql(url, "SELECT room, count(DISTINCT user_id) FROM room_presence GROUP BY room"))
        assert listed == rows
        return listed

    node.join("lobby", *ALICE, create_room=False)
    other.join("lobby", *ALICE, create_room=False)  # her second tab, on the other node
    other.join("lobby", *BOB, create_room=False)
    other.join("side", *BOB, create_room=False)
    node.join("lobby", *carol, create_room=False)
    assert counts() == {"lobby": 3, "side": 1}
    node.leave("lobby", *carol)
    node.leave("lobby", *ALICE)  # her tab on n2 is still there
    assert counts() == {"lobby": 2, "side": 1}
    node.join("lobby", *ALICE, create_room=False)
    assert counts() == {"lobby": 2, "side": 1}

    # n2 dies while Bob's join of 'side' on n1 is being committed: that join sees n2's row
    # (so Bob is counted already) and the burial must not uncount him.
    sql(url, "UPDATE chat_nodes SET heartbeat_at = now() - interval '1 hour' WHERE node_id = 'n2'")
    joined, commit = Event(), Event()

    def join_bob() -> None:
        with node.pool.transaction() as cur:
            cur.execute(_JOIN, node._parameters("side", *BOB, {}, "n1", False))
            joined.set()
            commit.wait()

    joining = gevent.spawn(join_bob)
    joined.wait(timeout=5)
    here = {("lobby", ALICE[0]): ALICE[1], ("side", BOB[0]): BOB[1]}  # n1's connections
    node.user_here = lambda user_id, room: (room, user_id) in here
    burying = gevent.spawn(node.heartbeat, lambda: here)
    with gevent.Timeout(5):
        while not sql(
            url, "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ):
            gevent.sleep(0.01)  # the burial waits for the join's locks
    commit.set()
    gevent.joinall([joining, burying], raise_error=True, timeout=5)
    assert counts() == {"lobby": 1, "side": 1}
    node.forget_node()
    assert counts() == {}


class Tab:
    """A connection as Memberships sees it, keeping what it is sent."""

    def __init__(self, user_id: int, username: str) -> None:
        self.user_id, self.username = user_id, username
        self.rooms: dict[str, int] = {}
        self.replayed_up_to: dict[str, int] = {}
        self.reads_ahead = None  # (no burst of joins is read ahead here)
        self.sent: list[dict] = []

    def send(self, frame: dict) -> None:
        self.sent.append(frame)

    def end_replay(self, room: str) -> None:
        """(No replay runs here.)"""


def test_a_join_answered_here_before_its_announcement_arrives_is_still_told_here(presence):
    """Bob's tab on another node enters the room first and announces his join; his tab here
    enters second (nothing to announce) and gets its join_ack before that announcement
    arrives. Listing him to himself must not tell the members here he came: the
    announcement does, once."""
    node, url, _ = presence
    told = tell_news_only(node)
    sql(url, "INSERT INTO chat_nodes (node_id) VALUES ('n1'), ('n2')")
    hub = Hub(fetch=lambda *args: [], gap_wait_seconds=1.0)
    membership = Memberships(hub, node, node.pool, join_ack_max_users=10)
    node.after_commit(node.enter("lobby", *ALICE).announced)  # alice is here: the list is read
    elsewhere = Presence(node.pool, node.bus, "n2", 10.0, lambda event: None)
    announced = elsewhere.enter("lobby", *BOB).announced  # first anywhere: numbered, on its way
    tab = Tab(*BOB)
    hub.connections_by_user[BOB[0]] = {tab}
    membership.apply("lobby", BOB[0])
    ack = tab.sent[-1]
    assert ack["type"] == "join_ack" and ack["data"]["online"] == 2
    assert {user["userId"] for user in orjson.loads(orjson.dumps(ack))["data"]["users"]} == {1, 2}
    for event in announced * 2:  # arrives, and once more
        node.deliver_event(event)
    node.online.by_room["lobby"].max_age_seconds = 0
    node.online.get("lobby")  # a read tells nothing more
    assert told == [("join", ALICE[0]), ("join", BOB[0])]


@pytest.mark.parametrize(
    "history, told",
    [
        (["remove"], {"type": "left", "room": "lobby", "reason": "removed"}),
        (["leave"], {"type": "left", "room": "lobby"}),
        (["remove", "invite", "leave"], {"type": "left", "room": "lobby"}),
        (["leave", "invite", "remove"], {"type": "left", "room": "lobby", "reason": "removed"}),
    ],
)
def test_a_membership_found_ended_before_its_event_is_told_with_why_it_ended(presence, history, told):
    """Another node ended Bob's membership and has not published its event yet (the Redis
    bus publishes after the commit): the heartbeat's membership check finds it gone first.
    His tab here must read a removal by the owner as one (PROTOCOL.md §8), and a leave as
    a plain leave, whatever ended the memberships before."""
    node, url, _ = presence
    sql(url, "UPDATE chat_members SET role = 'owner' WHERE user_id = %s", (ALICE[0],))
    hub = Hub(fetch=lambda *args: [], gap_wait_seconds=1.0)
    membership = Memberships(hub, node, node.pool, join_ack_max_users=10)
    tab = Tab(*BOB)
    hub.connections_by_user[BOB[0]] = {tab}
    elsewhere = Presence(node.pool, node.bus, "n2", 10.0, lambda event: None)
    member_event = {"k": "member", "room": "lobby", "userId": BOB[0]}
    steps = {
        "remove": lambda: elsewhere.remove("lobby", BOB[0], BOB[1], ALICE[0], {**member_event, "removed": True}),
        "leave": lambda: elsewhere.end_membership("lobby", *BOB),
        "invite": lambda: elsewhere.invite("lobby", BOB[0], ALICE[0], member_event) is not None,
    }
    for step in history[:-1]:
        assert steps[step]()
    membership.reconcile()  # a member: his tab receives the room
    assert "lobby" in tab.rooms and tab.sent[-1]["type"] == "join_ack"
    assert steps[history[-1]]()
    membership.full_check.mark()  # as when the bus reconnects, or the other node died
    membership.reconcile()
    assert "lobby" not in tab.rooms and tab.sent[-1] == told


class Listener(Tab):
    """A tab that also takes the encoded frames the hub fans out."""

    def send_frame(self, frame: bytes) -> None:
        self.sent.append(orjson.loads(frame[frame.index(b"{") :]))  # (past the WebSocket header)

    def presences(self) -> list[tuple[str, int]]:
        return [(f["data"]["event"], f["data"]["userId"]) for f in self.sent if f["type"] == "presence"]


def test_a_change_the_first_read_holds_before_its_event_arrives_is_told_once_to_those_in_the_room(presence):
    """Alice's tab is in the room here, but no list was read yet (her node's read failed, say):
    each event heard is news to her. Bob's join commits on another node; Carol's join here
    reads the room's first list, which holds Bob, before his event arrives. Alice is still
    told he came, once; Carol, whose join_ack lists him, is not told it again."""
    node, url, _ = presence
    sql(url, "INSERT INTO chat_nodes (node_id) VALUES ('n1'), ('n2')")
    sql(url, "INSERT INTO chat_members (room, user_id) VALUES ('lobby', 3)")
    hub = Hub(fetch=lambda *args: [], gap_wait_seconds=1.0)
    rt = SimpleNamespace(presence=node, hub=hub)
    node.deliver_event = node.online.tell = lambda payload: runtime.ChatRuntime.deliver_event(rt, payload)
    node.online.members_here = lambda room: hub.members_by_room.get(room, ())
    membership = Memberships(hub, node, node.pool, join_ack_max_users=10)
    alice = Listener(*ALICE)
    hub.connections_by_user[ALICE[0]] = {alice}
    membership._register(alice, "lobby", 0, 0)  # listed at connect; no list read here yet
    elsewhere = Presence(node.pool, node.bus, "n2", 10.0, lambda event: None)
    announced = elsewhere.enter("lobby", *BOB).announced  # committed; its event on its way
    carol = Listener(3, "carol")
    hub.connections_by_user[3] = {carol}
    membership.join(carol, "lobby", None, create_room=False)  # the first read: Bob is in it
    [ack] = [f for f in carol.sent if f["type"] == "join_ack"]
    assert {user["userId"] for user in orjson.loads(orjson.dumps(ack))["data"]["users"]} == {BOB[0], 3}
    for event in announced * 2:  # arrives, and once more
        node.deliver_event(event)
    assert alice.presences() == [("join", 3), ("join", BOB[0])]
    assert carol.presences() == []
    # Alice's tab gets a list too: from then on only what changes it is news to her
    membership.join(alice, "lobby", None, create_room=False)
    node.deliver_event({**announced[0], "v": announced[0]["v"] + 1000})
    assert alice.presences() == [("join", 3), ("join", BOB[0])]
    # a re-read keeps only those still without a list and in the room (nobody now)
    hub.leave_room(carol, "lobby")
    node.online.by_room["lobby"].max_age_seconds = 0
    assert node.online.get("lobby").unlisted == set()


def test_past_the_rooms_kept_only_the_lists_of_rooms_nobody_here_is_in_are_forgotten(presence, monkeypatch):
    """A list is what the members here were told; forgotten, the room's next read would be a
    first read again, with nothing to tell them the difference from."""
    from app import online as online_module

    node, url, _ = presence
    sql(url, "INSERT INTO rooms (name) VALUES ('side'), ('third')")
    monkeypatch.setattr(online_module, "MAX_ROOMS_KEPT", 1)
    node.online.members_here = lambda room: ["alice's tab"] if room == "lobby" else []
    node.online.get("lobby")
    node.online.get("side")
    node.online.get("third")  # past the limit: 'side' goes, 'lobby' stays
    assert set(node.online.by_room) == {"lobby", "third"}


def test_past_the_rooms_kept_rooms_that_all_have_members_here_are_not_walked_at_every_new_one(monkeypatch):
    """A crowd in more rooms than MAX_ROOMS_KEPT: nothing can be forgotten, and a sweep at
    every new room would walk every list for each (quadratic); the sweeps stay linear."""
    from app import online as online_module

    monkeypatch.setattr(online_module, "MAX_ROOMS_KEPT", 10)
    walked: list[str] = []

    def members_here(room: str) -> list[str]:
        walked.append(room)
        return ["a tab"]

    lists = OnlineLists(lambda room: {}, lambda event: None, 500, members_here=members_here)
    rooms = [f"room{n}" for n in range(2_000)]
    for room in rooms:
        lists.get(room)
    assert set(lists.by_room) == set(rooms)
    assert len(walked) < 4 * len(rooms)  # a sweep per new room: about two million


@pytest.mark.parametrize(
    "users, joiner, max_users",
    [
        ({}, (7, "gus"), 10),  # the first one online
        ({1: "alice", 2: "bob"}, (7, "gus"), 10),  # at the end
        ({1: "alice", 2: "bob"}, (7, "gus"), 3),  # the last place
        ({1: "alice", 2: "bob"}, (7, "gus"), 2),  # no place left: not listed
        ({1: "alice", 2: "bob"}, (2, "bob"), 10),  # listed already
        ({1: "alice", 2: "bob"}, (1, "alice2"), 10),  # renamed in place
        ({1: 'al"ice', 2: "b\u00f6b"}, (7, "g\u00fcs \U0001f600"), 10),  # names that JSON escapes
    ],
)
def test_a_joiner_is_listed_as_if_added_to_a_copy_and_the_list_stays_as_it_was(users, joiner, max_users):
    online = RoomOnline(dict(users))
    before = orjson.loads(orjson.dumps(online.listed(max_users)))
    copy = RoomOnline(dict(users))
    copy.add(*joiner)
    listed = orjson.loads(orjson.dumps(online.listed_with(*joiner, max_users)))
    assert listed == orjson.loads(orjson.dumps(copy.listed(max_users)))
    assert online.users == users and orjson.loads(orjson.dumps(online.listed(max_users))) == before


def test_a_join_ack_lists_the_joiner_and_counts_them_once():
    lists = OnlineLists(lambda room: {1: "alice"}, lambda event: None, max_announced_room_size=3)
    read = lists.get("lobby")
    listed, count = lists.join_ack_list("lobby", read, 2, "bob", 10)
    assert orjson.loads(orjson.dumps(listed)) == [
        {"userId": 1, "username": "alice"},
        {"userId": 2, "username": "bob"},
    ]
    assert count == 2 and read.users == {1: "alice"}  # bob's event is still news here
    listed, count = lists.join_ack_list("lobby", read, 1, "alice", 10)
    assert count == 1 and len(orjson.loads(orjson.dumps(listed))) == 1
    crowded = lists.get("lobby")
    crowded.add(3, "carol")
    crowded.add(4, "dan")
    listed, count = lists.join_ack_list("lobby", crowded, 5, "eve", 10)
    assert count == 4 and 5 in crowded.users  # too crowded for events: added to the list itself


def test_a_prefetch_reads_an_old_list_without_waiting_and_the_get_after_it_reads_nothing_more():
    """A resuming burst's joins (Memberships.read_ahead) start their rooms' reads together;
    each join's own get then waits for the read under way, and a fresh list is not read again."""

    reads: list[str] = []

    def read_users(room: str) -> dict[int, str]:
        reads.append(room)
        gevent.sleep(0.01)  # a round trip
        return {1: "alice"}

    lists = OnlineLists(read_users, lambda event: None, 500)
    for room in ("lobby", "den", "hall"):
        lists.prefetch(room)
    assert reads == []  # nothing waited for: the reads start once the loop comes round
    assert lists.get("den").users == {1: "alice"}
    gevent.sleep(0.05)
    assert sorted(reads) == ["den", "hall", "lobby"]  # one read each, the get's included
    lists.prefetch("lobby")
    gevent.sleep(0.05)
    assert len(reads) == 3  # fresh: not read again


def test_a_prefetch_that_finds_the_database_away_leaves_the_read_to_the_join():
    answers: list = [Unavailable("database away"), {2: "bob"}]

    def read_users(room: str) -> dict[int, str]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    lists = OnlineLists(read_users, lambda event: None, 500)
    lists.prefetch("lobby")
    gevent.sleep(0.01)
    assert len(answers) == 1  # tried, and failed quietly
    assert lists.get("lobby").users == {2: "bob"}  # the join's own get reads again


def test_the_online_lists_of_many_rooms_are_read_at_once_each_asker_its_own(presence):
    """The first joins of a crowd read thousands of rooms' lists: those asked for while a
    read runs share the next statement; each asker gets the room's users on live nodes."""

    node, url, _ = presence
    sql(url, "INSERT INTO chat_nodes (node_id) VALUES ('n2')")
    sql(url, "INSERT INTO chat_nodes (node_id, heartbeat_at) VALUES ('gone', now() - interval '1 hour')")
    sql(
        url,
        """INSERT INTO room_presence (room, user_id, node_id, username) VALUES ('lobby', 1, 'n2', 'alice'),
           ('lobby', 2, 'gone', 'bob'), ('den', 2, 'n2', 'bob'), ('den', 1, 'n2', 'alice')""",
    )
    reads = OnlineListReads(node.pool, 10.0)
    batches: list[list[str]] = []
    answer_batch = reads.answer_batch

    def counted(rooms):
        batches.append(rooms)
        return answer_batch(rooms)

    reads.answer_batch = counted
    greenlets = [gevent.spawn(reads.ask, room) for room in ("lobby", "den", "hall", "lobby", "den")]
    gevent.joinall(greenlets)
    lists = [g.value for g in greenlets]
    assert lists == [{1: "alice"}, {1: "alice", 2: "bob"}, {}, {1: "alice"}, {1: "alice", 2: "bob"}]
    assert lists[0] is not lists[3]  # each its own: a list is changed where it is kept
    assert len(batches) < len(greenlets)


def test_presence_rows_wait_while_a_crowd_connects_and_are_written_once_it_is_in():
    written: list[list] = []
    crowd = [True]
    tends = Tends(written.append, lambda: crowd[0])
    tends.ask_later([("lobby", 1, "ann"), ("lobby", 2, "bob")])
    gevent.sleep(0.3)
    assert written == []  # the welcomes and resumes of the crowd go first
    tends.ask_later([("lobby", 3, "cy")])  # joins the waiting batch
    crowd[0] = False
    gevent.sleep(0.6)  # the crowd is looked at every 0.1 s
    assert written == [[("lobby", 1, "ann"), ("lobby", 2, "bob"), ("lobby", 3, "cy")]]
    assert not tends.pending


def test_presence_rows_wait_for_a_crowd_no_longer_than_the_bound(monkeypatch):
    import app.presence as presence_module

    monkeypatch.setattr(presence_module, "TEND_CROWD_WAIT_SECONDS", 0.3)
    written: list[list] = []
    tends = Tends(written.append, lambda: True)  # a crowd that never ends
    tends.ask_later([("lobby", 1, "ann")])
    gevent.sleep(0.2)
    assert written == []
    gevent.sleep(1.0)
    assert written == [[("lobby", 1, "ann")]]
