"""The database layer's own checks, against a real PostgreSQL."""

from __future__ import annotations

import json
import os

import psycopg2.errors
import pytest

from app import db, event_store, presence, read_marks, runtime, store
from app.errors import Unavailable
from tests.support.databases import sql
from tests.support.identities import new_user_id, unique
from tests.support.waiting import wait_for


@pytest.fixture
def many_descriptors():
    """Hold 1,100 descriptors open, as a worker with that many clients does."""
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    yield
    for fd in held:
        os.close(fd)


def test_idle_connection_check_works_past_descriptor_1023(database_url, many_descriptors):
    """select() refuses descriptors above 1023; a live connection must not be taken for
    closed there (the group commit reconnected for every batch), nor a dead one for live."""
    conn = db.connect(database_url)
    try:
        assert conn.fileno() > 1024
        assert not db.closed_by_server(conn)
        sql(database_url, "SELECT pg_terminate_backend(%s)", (conn.get_backend_pid(),))
        # the server's goodbye arrives a moment later
        wait_for(lambda: db.closed_by_server(conn), 5, "the terminated connection seen as closed")
    finally:
        conn.close()


def test_group_commit_prepares_again_when_its_statements_are_gone(database_url):
    """A connection pooler's DISCARD ALL drops the prepared batch statements between two
    batches: the next batch prepares them again on a new connection, and stores."""
    lane = db.SingleConnection(database_url, 3, setup=store.prepare_batch_statements)
    room, user = unique("prepared"), new_user_id()
    sql(database_url, "INSERT INTO rooms (name) VALUES (%s)", (room,))

    def send(text: str) -> store.BatchResult:
        draft = store.Draft(from_user=user, username="p", content=text, room=room)
        return lane.run(lambda cur: store.store_batch(cur, [draft], None, "test"))[0]

    try:
        first = send("one")
        lane.run(lambda cur: cur.execute("DISCARD ALL"))
        second = send("two")
    finally:
        lane.close()
    assert (first.seq, second.seq) == (1, 2)
    stored = sql(database_url, "SELECT content FROM messages WHERE room = %s ORDER BY id", (room,))
    assert stored == [("one",), ("two",)]


def test_a_connection_whose_setup_fails_is_not_kept(database_url):
    """A half-prepared connection would fail every batch after it: it is closed, and the
    next batch connects and sets up anew."""
    attempts = []

    def setup(cur) -> None:
        attempts.append(cur.connection.get_backend_pid())
        if len(attempts) == 1:
            cur.execute("PREPARE broken AS SELECT * FROM no_such_table")

    lane = db.SingleConnection(database_url, 3, setup=setup)
    try:
        with pytest.raises(psycopg2.errors.UndefinedTable):
            lane.run(lambda cur: cur.execute("SELECT 1"))
        assert lane.conn is None
        assert lane.run(lambda cur: cur.execute("SELECT 1") or "ran") == "ran"
    finally:
        lane.close()
    assert len(attempts) == 2
    wait_for(
        lambda: not sql(database_url, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (attempts[0],)),
        5,
        "the first backend gone",
    )


def pages_read(cur, statements: list[str], params: dict) -> int:
    """The shared buffers (pages) that running these statements touches."""
    read = 0
    for statement in statements:
        cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, params)
        plan = cur.fetchone()[0][0]["Plan"]
        read += plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
    return read


def test_batch_plans_made_on_empty_tables_stay_lookups_as_the_tables_grow(fresh_database):
    """The group commit plans its statements once, perhaps while the tables are empty: a
    batch must still read only its own rows once they hold many (a plan that joined
    `messages` whole made every batch with clientIds scan all of it)."""
    url = fresh_database()
    conn = db.connect(url, autocommit=True)
    try:
        with conn.cursor() as cur:
            store.prepare_batch_statements(cur)
            cur.execute("INSERT INTO rooms (name) SELECT 'plan' || g FROM generate_series(1, 5) g")

            def batch(tag: str) -> list[store.Draft]:
                rooms = [store.Draft(i, "p", "x", room=f"plan{i}", client_id=f"{tag}r{i}") for i in range(1, 6)]
                dms = [store.Draft(i, "p", "x", to_user=i + 10, client_id=f"{tag}d{i}") for i in range(1, 3)]
                return rooms + dms

            store.store_batch(cur, batch("first"), "chat_plan_test", "test")  # plans made now
            cur.execute(
                """INSERT INTO messages (from_user, room, content, client_id, seq)
                   SELECT g % 1000, 'plan' || (g % 5 + 1), 'grown', 'grown' || g, 0
                   FROM generate_series(1, 60000) g"""
            )
            cur.execute("INSERT INTO dm_threads SELECT g, g + 1, 0 FROM generate_series(100, 30100) g")
            # No ANALYZE: it would make PostgreSQL plan again, while in a live server the
            # plans from before can be used for long (autovacuum analyzes once a minute at most).
            query, params = store.batch_query(batch("second"), "chat_plan_test", "test")
            read = pages_read(cur, query.split("; "), params)
    finally:
        conn.close()
    # index lookups of 7 drafts and their inserts: 167 pages; the whole-join plan: 1,228
    assert read < 400, f"one batch read {read} pages"


def test_pooled_connections_prepare_again_when_their_statements_are_gone(database_url):
    """A pooler's DISCARD ALL between two uses drops what a pooled connection prepared:
    that request fails as `unavailable`, and the next one gets a new connection."""
    pool = db.Pool(database_url, size=2, setup=runtime.prepare_pool_statements)
    # a statement every pooled connection prepares
    lock = presence.STATEMENTS.execute["chat_presence_lock"], {"lock": unique("lock")}
    try:
        with pool.autocommit() as cur:
            cur.execute(*lock)
            cur.execute("DISCARD ALL")
        with pytest.raises(Unavailable), pool.autocommit() as cur:
            cur.execute(*lock)
        with pool.autocommit() as cur:
            cur.execute(*lock)
    finally:
        pool.close()


def join_parameters(room: str, user_id: int, node: str) -> dict:
    return presence.statement_parameters(room, user_id, f"u{user_id}", node, 10.0, True, None, node, {})


def test_join_plans_made_on_empty_tables_stay_lookups_as_the_tables_grow(fresh_database):
    """The statements of a join are planned once per pooled connection, perhaps on empty
    tables: a join must still read only its own rows once rooms hold thousands."""
    url = fresh_database()
    pool = db.Pool(url, size=1, setup=runtime.prepare_pool_statements)
    node = unique("node")
    parameters = join_parameters("plan1", 1, node)
    try:
        with pool.autocommit() as cur:
            cur.execute("INSERT INTO chat_nodes (node_id) VALUES (%s)", (node,))
            cur.execute(presence._JOIN_CREATING, parameters)  # plans made now, on empty tables
            cur.execute(
                """INSERT INTO rooms (name) SELECT 'plan' || g FROM generate_series(2, 2000) g;
                   INSERT INTO room_presence (room, user_id, node_id, username)
                   SELECT 'plan' || (g %% 2000 + 1), g, %s, 'u' || g FROM generate_series(2, 40000) g;
                   INSERT INTO messages (from_user, room, content, seq)
                   SELECT g %% 1000, 'plan' || (g %% 2000 + 1), 'grown', 0 FROM generate_series(1, 60000) g""",
                (node,),
            )
            # No ANALYZE (see the batch test above).
            parameters = join_parameters("plan1", 2, node)
            statements = presence._JOIN_CREATING.split("; ") + [presence._LEAVE.split("; ")[-1]]
            read = pages_read(cur, statements, parameters)
    finally:
        pool.close()
    # index lookups: 27 pages; planned with sequential scans: 1,356
    assert read < 200, f"one join and leave read {read} pages"


def test_read_plans_made_on_small_tables_stay_lookups_as_the_tables_grow(fresh_database):
    """The statement of `read` is planned once per pooled connection, perhaps while the
    tables are small: a batch of reads must still read only its own rows once they hold
    many. (Planned for a hundred reads, as PostgreSQL guesses a set of JSON records, a
    join with a thousand memberships hashes them all, at every batch from then on.)"""
    url = fresh_database()
    pool = db.Pool(url, size=1, setup=runtime.prepare_pool_statements)

    def reads(message_id: int) -> dict:
        rooms = [read_marks.ReadMark(u, f"u{u}", f"plan{u}", None, message_id) for u in (1, 2)]
        dms = [read_marks.ReadMark(1, "u1", None, 2, message_id)]
        return read_marks._parameters(rooms, dms)

    def grow(first: int, last: int) -> None:
        cur.execute(
            """INSERT INTO rooms (name) SELECT 'plan' || g FROM generate_series(%(first)s, %(last)s) g;
               INSERT INTO chat_members (room, user_id) SELECT 'plan' || g, g
               FROM generate_series(%(first)s, %(last)s) g;
               INSERT INTO messages (from_user, room, content, seq)
               SELECT g %% 1000, 'plan' || g, 'grown', 0 FROM generate_series(%(first)s, %(last)s) g;
               INSERT INTO messages (from_user, to_user, content, seq)
               SELECT g %% 1000, g %% 1000 + 1, 'grown', 0 FROM generate_series(%(first)s, %(last)s) g;
               INSERT INTO dm_reads (user_id, other_id, last_read_id)
               SELECT g, g + 1, 0 FROM generate_series(%(first)s, %(last)s) g""",
            {"first": first, "last": last},
        )

    try:
        with pool.autocommit() as cur:
            grow(1, 1000)
            cur.execute("SELECT max(id) FROM messages")
            message_id = cur.fetchone()[0]
            cur.execute(read_marks._MARK, reads(message_id))  # planned now, on small tables
            grow(1001, 60000)
            # No ANALYZE (see the batch test above).
            read = pages_read(cur, [read_marks.STATEMENTS.execute["chat_read_marks"]], reads(message_id + 1))
    finally:
        pool.close()
    # index lookups: 41 pages; planned to hash the memberships (json_to_recordset): 893
    assert read < 200, f"three reads read {read} pages"


# A deadlock as PostgreSQL reports it (SQLSTATE 40P01), without staging two lockers.
RAISE_DEADLOCK = "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40P01', MESSAGE = 'deadlock detected'; END $$"


def test_a_deadlocked_group_commit_runs_once_more_on_the_same_connection(database_url):
    connection = db.SingleConnection(database_url, 3)
    attempts: list[int] = []

    def work(cur):
        attempts.append(cur.connection.get_backend_pid())
        if len(attempts) == 1:
            cur.execute(RAISE_DEADLOCK)
        cur.execute("SELECT 1")
        return cur.fetchone()[0]

    try:
        assert connection.run(work) == 1
        assert len(attempts) == 2 and attempts[0] == attempts[1]  # not taken for a lost connection
    finally:
        connection.close()


@pytest.mark.parametrize("statement", [RAISE_DEADLOCK, "SET statement_timeout = 1; SELECT pg_sleep(1)"])
def test_a_statement_rolled_back_is_unavailable_and_keeps_the_pools_connections(database_url, statement):
    pool = db.Pool(database_url, size=2)
    try:
        with pool.autocommit() as cur:
            cur.execute("SELECT pg_backend_pid()")
            backend = cur.fetchone()[0]
        with pytest.raises(Unavailable), pool.autocommit() as cur:
            cur.execute(statement)
        with pool.autocommit() as cur:
            cur.execute("RESET statement_timeout; SELECT pg_backend_pid()")
            assert cur.fetchone()[0] == backend
    finally:
        pool.close()


def test_the_pools_statement_timeout_cuts_a_statement_short_and_keeps_the_connection(database_url):
    pool = db.Pool(database_url, size=1, statement_timeout=0.2)
    try:
        backend = backend_of(pool)
        with pool.autocommit() as cur:
            cur.execute("SHOW statement_timeout")
            assert cur.fetchone()[0] == "200ms"
        with pytest.raises(Unavailable), pool.transaction() as cur:
            cur.execute("SELECT pg_sleep(5)")
        assert backend_of(pool) == backend
    finally:
        pool.close()


def backend_of(pool: db.Pool) -> int:
    with pool.autocommit() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


def event_parameters(cur, message_id: int, kind: str) -> dict:
    """Parameters for every statement of an event (app/event_store.py STATEMENTS): a
    reaction (`kind` react or unreact) of user 7 to the message, decided on its row as it
    is now, so that the store statement stores it."""
    cur.execute("SELECT xmin::text FROM messages WHERE id = %s", (message_id,))
    event = {
        "ord": 0,
        "kind": kind,
        "message_id": message_id,
        "version": cur.fetchone()[0],
        "user_id": 7,
        "username": "u7",
        "emoji": "x",
        "room": "plan1",
        "head": '"t":"reaction","c":["r","plan1"],"d":',
        "data": "{}",
    }
    return {
        "ids": [message_id],
        "user_ids": [7],
        "emojis": ["x"],
        "id": message_id,
        "user_id": 7,
        "emoji": "x",
        "kind": kind,
        "lock_rooms": ["plan1"],
        "lock_low": [7],
        "lock_high": [8],
        "events": json.dumps([event]),
        "channel": "chat_plan_test",
        "origin": "o",
    }


def test_event_plans_made_on_empty_tables_stay_lookups_as_the_tables_grow(fresh_database):
    """An event's statements are planned once per pooled connection (generic plans),
    perhaps on empty tables: an event must still read only its own rows once the tables
    hold many."""
    url = fresh_database()
    pool = db.Pool(url, size=1, setup=runtime.prepare_pool_statements)
    statements = list(event_store.STATEMENTS.execute.values())
    try:
        with pool.autocommit() as cur:
            cur.execute(
                """INSERT INTO rooms (name) VALUES ('plan1');
                   INSERT INTO messages (from_user, room, content, seq) VALUES (8, 'plan1', 'hi', 1) RETURNING id"""
            )
            message_id = cur.fetchone()[0]
            react = event_parameters(cur, message_id, "react")
            for statement in statements:  # plans made now, on empty tables (one stores the react)
                cur.execute(statement, react)
            cur.execute(
                """INSERT INTO rooms (name) SELECT 'plan' || g FROM generate_series(2, 2000) g;
                   INSERT INTO chat_members (room, user_id) SELECT 'plan' || (g %% 2000 + 1), g
                   FROM generate_series(1, 40000) g;
                   INSERT INTO messages (from_user, room, content, seq)
                   SELECT g %% 1000, 'plan' || (g %% 2000 + 1), 'grown', 0 FROM generate_series(1, 60000) g;
                   INSERT INTO message_events (id, seq, room, kind, message_id, user_id, username, emoji)
                   SELECT 10000000 + g, 0, 'plan2', 'react', %s + g, g %% 1000, 'u', 'x'
                   FROM generate_series(1, 60000) g;
                   INSERT INTO message_reactions (message_id, user_id, emoji, event_id)
                   SELECT %s + g, g %% 1000, 'x', 10000000 + g FROM generate_series(1, 60000) g;
                   INSERT INTO dm_threads SELECT g, g + 1, 0 FROM generate_series(100, 30100) g""",
                (message_id, message_id),
            )
            # No ANALYZE (see the batch test above).
            read = pages_read(cur, statements, event_parameters(cur, message_id, "unreact"))
    finally:
        pool.close()
    # index lookups: 149 pages; planned with sequential scans: 8,548
    assert read < 400, f"one event's statements read {read} pages"


@pytest.mark.parametrize("ids", [[], [7], [1, -2, 2**62, True]])
def test_a_bigint_array_reaches_postgresql_as_the_integers_it_holds(database_url, ids):
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT %s, pg_typeof(%s)::text", (db.BigintArray(ids), db.BigintArray(ids)))
        assert cur.fetchone() == ([int(i) for i in ids], "bigint[]")


@pytest.mark.parametrize("bad", [None, 2.5, "3", "1}'; DROP TABLE users; --"])
def test_a_bigint_array_holding_anything_but_integers_is_refused_before_it_is_sent(database_url, bad):
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur, pytest.raises(TypeError):
        cur.mogrify("%s", (db.BigintArray([1, bad]),))


# Strings an array literal or an SQL string could take for syntax.
AWKWARD_STRINGS = ['q"uote', "back\\slash", "it's", "NULL", "null", "", "{brace}", "com,ma", "  sp ", "ünï 😀", "\\\"'"]


@pytest.mark.parametrize("conforming", ["on", "off"])
@pytest.mark.parametrize(
    "values",
    [
        [],
        ["general"],
        [""],
        ["NULL"],
        ["general", "random", "", "dev"],
        AWKWARD_STRINGS,
        ["'); DROP TABLE users; --"],
        *(["general", awkward, "dev"] for awkward in AWKWARD_STRINGS),
    ],
)
def test_a_text_array_reaches_postgresql_as_the_strings_it_holds(database_url, values, conforming):
    """Whatever the strings, and whether backslashes are escapes in plain SQL strings or not."""
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(f"SET standard_conforming_strings = {conforming}")
        array = db.TextArray(values)
        cur.execute("SELECT %s, pg_typeof(%s)::text, %s", (array, array, array))  # the literal once, kept
        assert cur.fetchone() == (values, "text[]", values)


@pytest.mark.parametrize("bad", [None, 7, b"bytes", "nul \x00 inside"])
def test_a_text_array_holding_anything_but_text_is_refused_before_it_is_sent(database_url, bad):
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur, pytest.raises((TypeError, ValueError)):
        cur.mogrify("%s", (db.TextArray(["fine", bad]),))


@pytest.mark.parametrize("flags", [[], [True], [True, False, False]])
def test_a_bool_array_reaches_postgresql_as_the_booleans_it_holds(database_url, flags):
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT %s, pg_typeof(%s)::text", (db.BoolArray(flags), db.BoolArray(flags)))
        assert cur.fetchone() == (flags, "boolean[]")


@pytest.mark.parametrize("bad", [None, 1, "t"])
def test_a_bool_array_holding_anything_but_booleans_is_refused_before_it_is_sent(database_url, bad):
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur, pytest.raises(TypeError):
        cur.mogrify("%s", (db.BoolArray([True, bad]),))
