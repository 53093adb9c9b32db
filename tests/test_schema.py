"""schema.sql on a fresh database and on the existing backend's older tables."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest

from app import create_app, schema, store
from tests.support.clients import Client
from tests.support.databases import database_url_for, drop_database, sql
from tests.support.identities import make_token, new_user_id
from tests.support.project import ROOT
from tests.support.servers import Server

LEGACY_TABLES = """
CREATE TABLE users (id SERIAL PRIMARY KEY, username VARCHAR(50) UNIQUE NOT NULL,
                    created_at TIMESTAMP DEFAULT NOW());
CREATE TABLE rooms (id SERIAL PRIMARY KEY, name VARCHAR(100) UNIQUE NOT NULL,
                    is_private BOOLEAN DEFAULT FALSE, created_at TIMESTAMP DEFAULT NOW());
CREATE TABLE messages (id SERIAL PRIMARY KEY, from_user INTEGER NOT NULL REFERENCES users(id),
                       to_user INTEGER REFERENCES users(id), room VARCHAR(100), content TEXT NOT NULL,
                       timestamp TIMESTAMP DEFAULT NOW());
INSERT INTO users (username) VALUES ('old-timer');
INSERT INTO rooms (name, is_private) VALUES ('legacy', false), ('board', true);
INSERT INTO messages (from_user, room, content, timestamp)
    VALUES (1, 'legacy', 'from the old days', '2025-01-02 03:04:05.678901');
"""
# A private room of the existing backend, with a message, added after LEGACY_TABLES.
LEGACY_PRIVATE_MESSAGE = "INSERT INTO messages (from_user, room, content) VALUES (1, 'board', 'members only')"


@pytest.fixture
def empty_database(admin_url):
    """A database with no table at all."""
    name = f"chat_empty_{new_user_id()}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    yield database_url_for(admin_url, name)
    drop_database(admin_url, name)


@pytest.fixture
def legacy_database(empty_database):
    sql(empty_database, LEGACY_TABLES)
    return empty_database


def make_db(url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", "db", f"DATABASE_URL={url}"], cwd=ROOT, capture_output=True, text=True
    )


@pytest.mark.slow
def test_make_db_twice_on_the_legacy_tables_keeps_their_data_and_serves(legacy_database):
    for _ in range(2):
        result = make_db(legacy_database)
        assert result.returncode == 0, result.stderr
    assert sql(legacy_database, "SELECT name, is_private, description FROM rooms ORDER BY id") == [
        ("legacy", False, ""),
        ("board", True, ""),
    ]
    assert sql(legacy_database, "SELECT count(*) FROM messages") == [(1,)]
    srv = Server(legacy_database).start()
    try:
        user_id = new_user_id() % 1_000_000_000  # an int4 id, as the legacy table has
        client = Client.connect(srv.url, make_token(user_id, "newcomer"))
        client.expect("welcome")
        client.send({"type": "join", "room": "legacy"})
        client.expect("join_ack", room="legacy")
        client.send({"type": "room_history", "room": "legacy"})
        old = client.expect("room_history")["data"]
        assert [(m["id"], m["username"], m["content"], m["timestamp"]) for m in old] == [
            (1, "old-timer", "from the old days", "2025-01-02T03:04:05.678901Z")
        ]
        client.send({"type": "message", "room": "legacy", "content": "hello old friends"})
        new = client.expect("message", room="legacy")["data"]
        assert new["id"] == 2
        client.send({"type": "join", "room": "legacy", "since": 0})
        client.expect("join_ack", room="legacy")
        # A member resuming: the replay sends what did not reach this connection live.
        assert client.expect("message", room="legacy")["data"]["id"] == 1
        client.nothing_more("message", wait=0.3)
        client.send({"type": "dm", "to": 1, "content": "hi old-timer"})
        assert client.expect("dm_sent")["data"]["message"]["to"] == 1
        client.close()
    finally:
        srv.stop()


@pytest.mark.slow
def test_the_legacy_backends_private_rooms_are_not_served(legacy_database):
    """Who may read a private room is the existing backend's business, unknown here: such a
    room is not listed, and joining it or reading its history is not_found."""
    assert make_db(legacy_database).returncode == 0
    sql(legacy_database, LEGACY_PRIVATE_MESSAGE)
    srv = Server(legacy_database).start()  # rooms made on first join, as by default
    try:
        user_id = new_user_id() % 1_000_000_000
        client = Client.connect(srv.url, make_token(user_id, "outsider"))
        client.expect("welcome")
        client.send({"type": "rooms"})
        assert [room["name"] for room in client.expect("rooms")["data"]] == ["legacy"]
        for frame in (
            {"type": "join", "room": "board"},
            {"type": "join", "room": "board", "since": 0},
            {"type": "room_history", "room": "board"},
            {"type": "room_history", "room": "board", "after": 0},
            {"type": "message", "room": "board", "content": "let me in"},
            {"type": "leave", "room": "board"},
        ):
            client.send(frame)
            client.expect_error("not_found")
        client.send({"type": "ping"})
        client.expect("pong")
        client.close()
    finally:
        srv.stop()
    assert sql(legacy_database, "SELECT count(*) FROM messages WHERE room = 'board'") == [(1,)]


@pytest.mark.slow
def test_create_user_on_the_legacy_tables_draws_from_the_backends_own_sequence(legacy_database):
    """A user made here takes the next id of the existing backend's users.id serial, which
    that backend's next user then skips; that backend's users get no password here."""
    assert make_db(legacy_database).returncode == 0
    app = create_app({"TESTING": True, "DATABASE_URL": legacy_database, "JWT_SECRET": "x"})
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["create-user", "old-timer", "--password", "pw", "--reset-password"])
    assert refused.exit_code == 1 and "user of the tokens' issuer" in refused.output
    assert runner.invoke(args=["create-user", "newbie", "--password", "pw"]).exit_code == 0
    sql(legacy_database, "INSERT INTO users (username) VALUES ('their-next')")
    assert sql(legacy_database, "SELECT id, username, password IS NULL FROM users ORDER BY id") == [
        (1, "old-timer", True),
        (2, "newbie", False),
        (3, "their-next", True),
    ]


def test_schema_loads_twice_on_a_fresh_database(fresh_database):
    url = fresh_database()
    assert make_db(url).returncode == 0
    tables = {row[0] for row in sql(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"users", "rooms", "messages", "dm_threads", "chat_nodes", "room_presence"} <= tables
    columns = {
        row[0] for row in sql(url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'messages'")
    }
    assert {"id", "from_user", "to_user", "room", "content", "timestamp"} <= columns


def test_the_search_index_keeps_a_pending_list_also_when_it_was_built_without(fresh_database):
    """Entries written into the index one at a time made four fifths of a message's WAL; the
    pending list takes them in one write (app/search_merge.py). A load on a database whose
    index was built without it (fastupdate off) turns it on."""
    url = fresh_database()
    options = "SELECT reloptions FROM pg_class WHERE relname = 'messages_search_scoped'"
    assert sql(url, options) == [(["fastupdate=on"],)]
    sql(url, "ALTER INDEX messages_search_scoped SET (fastupdate = off)")
    assert make_db(url).returncode == 0
    assert sql(url, options) == [(["fastupdate=on"],)]


def test_the_search_column_of_an_older_version_is_made_again_with_its_index(fresh_database):
    """An older `search` column split words at spaces only: a load replaces it (and its
    index) by `search_words`, which finds a Chinese word inside a run of characters."""
    url = fresh_database()
    sql(url, "DROP INDEX messages_search_scoped")
    sql(url, "ALTER TABLE messages DROP COLUMN search_words")
    sql(
        url,
        "ALTER TABLE messages ADD COLUMN search tsvector GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED",
    )
    sql(
        url,
        "CREATE INDEX messages_search_scoped ON messages"
        " USING gin ((search || chat_search_scope(id, room, from_user, to_user)))",
    )
    sql(url, "INSERT INTO messages (from_user, room, content) VALUES (1, 'r', '我说你好世界')")
    assert make_db(url).returncode == 0
    columns = (
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_name = 'messages' AND column_name IN ('search', 'search_words')"
    )
    assert sql(url, columns) == [("search_words",)]
    found = "SELECT count(*) FROM messages WHERE search_words @@ websearch_to_tsquery('simple', '\"你 好\"')"
    assert sql(url, found) == [(1,)]
    index = "SELECT pg_get_indexdef('messages_search_scoped'::regclass)"
    assert "search_words" in sql(url, index)[0][0]


def test_a_search_column_that_is_not_ours_is_left_alone(legacy_database):
    """Only our own generated column is replaced: the existing backend's tables are theirs."""
    sql(legacy_database, "ALTER TABLE messages ADD COLUMN search text")
    sql(legacy_database, "UPDATE messages SET search = 'their notes'")
    assert make_db(legacy_database).returncode == 0
    assert make_db(legacy_database).returncode == 0
    assert sql(legacy_database, "SELECT search FROM messages WHERE content = 'from the old days'") == [("their notes",)]


def test_a_reaction_rewrites_its_message_in_place_without_touching_its_indexes(fresh_database):
    """A HOT update: the page has room for the new version, and no indexed column changed."""
    url = fresh_database()
    assert make_db(url).returncode == 0
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO messages (from_user, room, content, seq) "
            "SELECT 1, 'general', 'message ' || g, g FROM generate_series(1, 200) g"
        )
        conn.commit()
        cur.execute("""UPDATE messages SET reactions = '{"\U0001f44d": [2]}' WHERE id IN (50, 150)""")
        cur.execute(
            "SELECT pg_stat_get_xact_tuples_updated(c.oid), pg_stat_get_xact_tuples_hot_updated(c.oid) "
            "FROM pg_class c WHERE relname = 'messages'"
        )
        assert cur.fetchone() == (2, 2)


@pytest.mark.slow
def test_a_server_on_an_empty_database_creates_the_tables_itself(empty_database):
    srv = Server(empty_database, workers=2).start()
    try:

        def connect_one() -> Client:
            user_id = new_user_id()
            client = Client.connect(srv.url, make_token(user_id, f"user{user_id}"))
            client.expect("welcome")
            return client

        # At once, while the first of each worker waits for the schema: both workers
        # take the schema lock in turn, and each makes one runtime, not one per client.
        with ThreadPoolExecutor(max_workers=20) as pool:
            clients = list(pool.map(lambda _: connect_one(), range(20)))
        first = clients[0]
        first.send({"type": "join", "room": "lobby"})
        first.expect("join_ack", room="lobby")
        first.send({"type": "message", "room": "lobby", "content": "first words"})
        assert first.expect("message", room="lobby")["data"]["content"] == "first words"
        assert sql(empty_database, "SELECT content FROM messages") == [("first words",)]
        assert srv.log().count("schema loaded") == 1
        assert 1 <= srv.log().count("chat runtime started") <= 2
        for client in clients:
            client.close()
    finally:
        srv.stop()


@pytest.mark.parametrize(
    "older, added, present",
    [
        (
            "ALTER TABLE room_presence DROP COLUMN announced",
            "room_presence.announced",
            "SELECT 1 FROM information_schema.columns WHERE table_name = 'room_presence' AND column_name = 'announced'",
        ),
        (
            "DROP SEQUENCE presence_versions",
            "presence_versions",
            "SELECT 1 WHERE to_regclass('presence_versions') IS NOT NULL",
        ),
    ],
)
@pytest.mark.slow
def test_a_server_adds_what_its_older_version_did_not_have(fresh_database, older, added, present):
    """A database an older server made (a column or a sequence fewer) is upgraded at
    start: without it the prepared join statement would fail on every pooled connection."""
    url = fresh_database()
    sql(url, older)
    srv = Server(url).start()
    try:
        user_id = new_user_id()
        client = Client.connect(srv.url, make_token(user_id, f"user{user_id}"))
        client.expect("welcome")
        client.send({"type": "join", "room": "upgraded"})
        client.expect("join_ack", room="upgraded")
        client.close()
    finally:
        srv.stop()
    assert sql(url, present) == [(1,)]
    assert added in srv.log()


@pytest.mark.slow
def test_the_upgrade_makes_recent_senders_members_of_their_rooms_once(legacy_database):
    """On the existing backend's database, the members table is made with its upgrade
    rule: whoever sent to a room in the last 30 days is a member of it (read up to their
    own last message); an older sender is not. A second load changes nothing."""
    sql(legacy_database, "INSERT INTO users (username) VALUES ('recent')")
    sql(legacy_database, "INSERT INTO rooms (name) VALUES ('lively')")
    sql(
        legacy_database,
        """INSERT INTO messages (from_user, room, content, timestamp) VALUES
           (2, 'lively', 'a week ago', now() - interval '7 days'),
           (2, 'lively', 'yesterday', now() - interval '1 day'),
           (1, 'lively', 'long ago', now() - interval '60 days'),
           (2, 'board', 'members only', now())""",
    )
    assert make_db(legacy_database).returncode == 0
    members = "SELECT room, user_id, role, last_read_id FROM chat_members ORDER BY room, user_id"
    last = sql(legacy_database, "SELECT max(id) FROM messages WHERE room = 'lively' AND from_user = 2")[0][0]
    board = sql(legacy_database, "SELECT max(id) FROM messages WHERE room = 'board'")[0][0]
    assert sql(legacy_database, members) == [("board", 2, "member", board), ("lively", 2, "member", last)]
    sql(legacy_database, "DELETE FROM chat_members WHERE room = 'board'")  # left since
    assert make_db(legacy_database).returncode == 0
    assert sql(legacy_database, members) == [("lively", 2, "member", last)]


@pytest.mark.slow
def test_loading_the_schema_fills_the_last_id_of_existing_conversations_once(fresh_database):
    """A database whose dm_threads predates last_id gets each conversation's newest message
    or event id when the schema is loaded, and `conversations` lists them by it; a later
    load changes nothing."""
    url = fresh_database()
    sql(url, "ALTER TABLE dm_threads DROP COLUMN last_id")
    sql(
        url,
        """INSERT INTO messages (id, from_user, to_user, content, seq) VALUES
               (901, 1, 2, 'to two', 1), (902, 3, 1, 'from three', 1), (903, 2, 1, 'from two', 2);
           INSERT INTO message_events (id, seq, user_low, user_high, kind, message_id, user_id, username, emoji)
               VALUES (904, 2, 1, 3, 'react', 902, 1, 'one', 'x');
           INSERT INTO dm_threads (user_low, user_high, last_seq) VALUES (1, 2, 2), (1, 3, 2), (4, 5, 1)""",
    )
    assert make_db(url).returncode == 0
    threads = "SELECT user_low, user_high, last_id FROM dm_threads ORDER BY user_low, user_high"
    assert sql(url, threads) == [(1, 2, 903), (1, 3, 904), (4, 5, 0)]
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            assert [(c["userId"], c["lastId"]) for c in store.conversations_of(cur, 1, 10)] == [(3, 904), (2, 903)]
    finally:
        conn.close()
    sql(url, "UPDATE dm_threads SET last_id = 0 WHERE user_low = 1 AND user_high = 2")
    assert make_db(url).returncode == 0
    assert sql(url, threads) == [(1, 2, 0), (1, 3, 904), (4, 5, 0)]


@pytest.mark.slow
def test_reactions_stored_in_two_forms_of_one_emoji_become_one_at_the_next_start_once(fresh_database):
    """Reactions stored before emoji had one form (app/emoji.py): a server start rewrites
    them to it, a user's two forms of one emoji becoming their first reaction; the events
    and the message's summary follow. It runs once: a later load leaves what it finds."""
    bare, full, thumbs = "\u2764", "\u2764\ufe0f", "\U0001f44d"
    url = fresh_database()
    sql(url, "DELETE FROM chat_upgrades")  # as on a database of the version before
    sql(
        url,
        """INSERT INTO messages (id, from_user, to_user, content, seq, reactions) VALUES
               (911, 1, 2, 'hearts', 1, %(summary)s), (912, 2, 1, 'thumbs', 2, %(thumbs_summary)s);
           INSERT INTO message_reactions (message_id, user_id, emoji, event_id) VALUES
               (911, 2, %(bare)s, 921), (911, 1, %(full)s, 922), (911, 1, %(bare)s, 923), (912, 1, %(thumbs)s, 924);
           INSERT INTO message_events (id, seq, user_low, user_high, kind, message_id, user_id, username, emoji)
               VALUES (921, 3, 1, 2, 'react', 911, 2, 'two', %(bare)s),
                      (922, 4, 1, 2, 'react', 911, 1, 'one', %(full)s),
                      (923, 5, 1, 2, 'react', 911, 1, 'one', %(bare)s),
                      (924, 6, 1, 2, 'react', 912, 1, 'one', %(thumbs)s)""",
        {
            "bare": bare,
            "full": full,
            "thumbs": thumbs,
            "summary": f'{{"{bare}": [2, 1], "{full}": [1]}}',
            "thumbs_summary": f'{{"{thumbs}": [1]}}',
        },
    )
    assert "the upgrade of reactions in the normal form of their emoji" in schema.load_schema(url, only_if_missing=True)
    reactions = "SELECT message_id, user_id, emoji, event_id FROM message_reactions ORDER BY event_id"
    assert sql(url, reactions) == [(911, 2, full, 921), (911, 1, full, 922), (912, 1, thumbs, 924)]
    summaries = "SELECT id, reactions::text FROM messages ORDER BY id"
    assert [(id, json.loads(summary)) for id, summary in sql(url, summaries)] == [
        (911, {full: [2, 1]}),
        (912, {thumbs: [1]}),
    ]
    assert sql(url, "SELECT id, emoji FROM message_events ORDER BY id") == [
        (921, full),
        (922, full),
        (923, full),
        (924, thumbs),
    ]
    sql(url, "INSERT INTO message_reactions (message_id, user_id, emoji, event_id) VALUES (912, 2, %s, 925)", (bare,))
    assert schema.load_schema(url, only_if_missing=True) == []
    assert make_db(url).returncode == 0
    assert sql(url, "SELECT emoji FROM message_reactions WHERE event_id = 925") == [(bare,)]
