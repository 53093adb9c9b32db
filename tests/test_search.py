"""Message search (PROTOCOL.md §11), over a real server and PostgreSQL's full-text index."""

from __future__ import annotations

import hashlib
import json
import uuid

import psycopg2
import pytest

from app import search as search_module
from tests.support.clients import Client, join
from tests.support.databases import sql
from tests.support.identities import new_user_id, unique
from tests.support.project import ROOT


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


def test_where_a_message_was_written_is_not_a_word_to_find(connect):
    """The index holds each message's words with lexemes of its room or conversation
    (schema.sql, chat_search_scope): typed as a query, they find nothing."""
    room = unique("scoped")
    alice, bob = connect(), connect()
    join(alice, room)
    send(alice, room, "a plain message")
    dm(alice, bob.user_id, "a plain dm")
    room_lexeme = "R" + hashlib.md5(room.encode()).hexdigest()
    for query in (room_lexeme, f"U{alice.user_id}", f"U{bob.user_id}", f"{room_lexeme} plain"):
        assert search(alice, query) == []
        assert search(alice, query, room=room) == []
        assert search(alice, query, **{"with": bob.user_id}) == []


def test_a_conversation_with_oneself_is_searched_like_any(connect):
    secret = word()
    alice, bob = connect(), connect()
    note = dm(alice, alice.user_id, f"note to self: {secret}")
    dm(alice, bob.user_id, f"not to self: {secret}")
    assert search(alice, secret, **{"with": alice.user_id}) == [note]
    assert len(search(alice, secret)) == 2


def test_a_room_whose_name_is_no_lexeme_is_searched(database_url):
    """A room of the existing backend may be named anything (spaces, quotes, operators of
    a query, any script): the index knows a room by the md5 of its name, which any name has."""
    secret, me = word(), new_user_id()
    room = f"it's {unique('old')} — ünïcode & | !"
    sql(database_url, "INSERT INTO rooms (name) VALUES (%s)", (room,))
    sql(database_url, "INSERT INTO chat_members (room, user_id) VALUES (%s, %s)", (room, me))
    sql(
        database_url,
        "INSERT INTO messages (from_user, room, content) VALUES (%s, %s, %s)",
        (me, room, f"{secret} here"),
    )
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for scope in (None, room):
                found = search_module.search(cur, me, secret, scope, None, None, 20)
                assert [(m.data["room"], m.data["content"]) for m in found] == [(room, f"{secret} here")]
            assert search_module.search(cur, me + 1, secret, None, None, None, 20) == []
    finally:
        conn.close()


class RecordingCursor(psycopg2.extensions.cursor):
    """A cursor that keeps every statement it ran, as sent."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ran: list[bytes] = []

    def execute(self, query, vars=None):
        super().execute(query, vars)
        self.ran.append(self.query)


def test_the_search_asks_the_scoped_index(database_url):
    """Each kind of search matches the expression of messages_search_scoped in every step
    that reads the index, so that the index can serve them (else a search for a rare word
    would read the whole table)."""
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor(cursor_factory=RecordingCursor) as cur:
            # Without the plans that need no index (the other indexes of `messages` set
            # aside, in a transaction rolled back), the plan shows whether the index fits.
            cur.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = off")
            cur.execute("ALTER TABLE messages DROP CONSTRAINT messages_pkey")
            cur.execute(
                """SELECT indexname FROM pg_indexes
                   WHERE tablename = 'messages' AND indexname <> 'messages_search_scoped'"""
            )
            for (index,) in cur.fetchall():
                cur.execute(f'DROP INDEX "{index}"')
            for room, other in ((None, None), ("lobby", None), (None, 2)):
                cur.ran = []
                # (a word nowhere: every step runs, from an id past the windows)
                search_module.search(cur, 1, word(), room, other, 1 << 24, 20)
                (query,) = [query for query in cur.ran if b"chat_search_scope" in query]
                cur.execute(b"EXPLAIN " + query)
                plan = "\n".join(row[0] for row in cur)
                # (each window, and the rest)
                steps = plan.count("Bitmap Index Scan on messages_search_scoped")
                assert steps == len(search_module.WINDOWS) + 1, plan
    finally:
        conn.rollback()
        conn.close()


def test_every_step_of_a_search_adds_the_next_newest(fresh_database):
    """Matches spread over ids that the walk, each window and the rest find: a search
    and its pages list them all, newest first, once each, whatever step finds them."""
    url = fresh_database()
    me, room, other_room = new_user_id(), unique("spread"), unique("other")
    sql(url, "INSERT INTO chat_members (room, user_id) VALUES (%s, %s)", (room, me))
    # At ids around each step's bounds from the newest (WALK, then 2 and up to 4 blocks of
    # each window), a match in the user's room and one elsewhere.
    newest = 3 << 21
    ids = sorted(
        {
            max(newest - d + k, 1)
            for d in (1, 2, 1 << 14, 1 << 16, 1 << 17, 1 << 18, 1 << 19, 1 << 20, 1 << 21, 3 << 20, newest)
            for k in (-1, 0, 1)
        }
    )
    rows = [(i, me, room if n % 3 else other_room, f"needle {i}") for n, i in enumerate(ids)]
    for row in rows:
        sql(url, "INSERT INTO messages (id, from_user, room, content) VALUES (%s, %s, %s, %s)", row)
    mine = sorted((i for i, _, r, _ in rows if r == room), reverse=True)
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for scope in (None, room):
                assert [m.id for m in search_module.search(cur, me, "needle", scope, None, None, 100)] == mine
                paged, before = [], None
                while True:
                    page = search_module.search(cur, me, "needle", scope, None, before, 3)
                    if not page:
                        break
                    paged += [m.id for m in page]
                    before = page[-1].id
                assert paged == mine
    finally:
        conn.close()


def test_a_later_page_walks_only_when_the_pages_before_it_were_dense(fresh_database):
    """A page whose `before` lies far below the newest message (the pages before it found
    the word sparse for this user) skips the walk of the newest ids and reads the index;
    a first page, or one near the newest (a common word), walks. Either way the same
    messages are found (test_every_step_of_a_search_adds_the_next_newest pages through both)."""
    url = fresh_database()
    newest = 3 << 21
    sql(url, "INSERT INTO messages (id, from_user, room, content) VALUES (%s, 1, 'lobby', 'newest')", (newest,))
    span = search_module.WALK_AFTER_SPAN_MAX
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor(cursor_factory=RecordingCursor) as cur:
            for before, walks in ((None, True), (newest - 5, True), (newest - span + 2, True), (newest - span, False)):
                cur.ran = []
                search_module.search(cur, 1, "needle", None, None, before, 20)
                first_branch = cur.ran[-1].split(b"UNION ALL")[0]
                assert (b"chat_search_scope" not in first_branch) == walks, before
            cur.ran = []
            assert search_module.search(cur, 1, "needle", None, None, 0, 20) == []
            assert len(cur.ran) == 1  # nothing below id 0: no search statement at all
    finally:
        conn.close()


def test_a_search_is_never_planned_in_parallel(fresh_database):
    """Its steps are the branches of a UNION ALL read in order, newest first, until the
    page is full: a Parallel Append would interleave them (and stop on older matches)."""
    url = fresh_database()
    sql(
        url,
        """INSERT INTO messages (from_user, room, content)
           SELECT n %% 50, 'r' || n %% 40, 'word' || n %% 7 FROM generate_series(1, 50000) AS n""",
    )
    sql(url, "INSERT INTO chat_members (room, user_id) SELECT 'r' || n, 1 FROM generate_series(1, 30) AS n")
    sql(url, "ANALYZE")
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor(cursor_factory=RecordingCursor) as cur:
            # Parallel plans made as cheap as they get.
            for setting in ("parallel_setup_cost", "parallel_tuple_cost"):
                cur.execute(f"SET {setting} = 0")
            for setting in ("min_parallel_table_scan_size", "min_parallel_index_scan_size"):
                cur.execute(f"SET {setting} = 0")
            for room in (None, "r1"):
                search_module.search(cur, 1, "word3", room, None, None, 20)
                cur.execute(b"EXPLAIN " + cur.ran[-1])
                plan = "\n".join(row[0] for row in cur)
                assert "Append" in plan and "Gather" not in plan, plan
    finally:
        conn.close()


@pytest.mark.parametrize(
    "query, read_as",
    [
        ("release notes", "release notes"),  # no kana or ideograph: as sent
        ("你好", ' "你 好" '),
        ("你好 world", ' "你 好"  world'),
        ("hello你好", 'hello "你 好" '),
        ("-你好", '- "你 好" '),
        ("你好 or 世界", ' "你 好"  or  "世 界" '),
        ('"你好 world"', '" 你 好  world"'),  # within quotes, part of that phrase
        ('"你好', '" 你 好 '),  # a quote left open: a phrase to the end, as websearch reads it
        ("こんにちはカタカナ", ' "こ ん に ち は カ タ カ ナ" '),
        ("한국어", "한국어"),  # Korean is written with spaces between its words
        ("\U00020000\U00020001", ' "\U00020000 \U00020001" '),  # ideographs past U+FFFF
    ],
)
def test_a_run_of_kana_or_ideographs_is_searched_as_a_phrase_of_its_characters(query, read_as):
    assert search_module.search_query(query) == read_as


def test_the_index_sets_apart_the_characters_the_query_makes_phrases_of():
    """schema.sql's chat_search_text and search.search_query must agree on the characters:
    one the index keeps in a run, the other splits, would never be found."""
    schema = (ROOT / "schema.sql").read_text()
    assert f"'([{search_module.IDEOGRAPHIC}])'" in schema


def test_chinese_and_japanese_are_found_inside_a_run_of_characters(connect):
    """The 'simple' parser splits words at spaces and punctuation only: each kana and
    ideograph is indexed as a word of its own, and a query's run is a phrase of them."""
    alice = connect()
    room = unique("room")
    join(alice, room)
    tag = word()
    sent = {
        text: send(alice, room, f"{text} {tag}")["id"]
        for text in ("我说你好世界", "世界你好", "こんにちは世界", "hello你好")
    }

    def found(query: str) -> set[str]:
        ids = {message["id"] for message in search(alice, f"{query} {tag}", room=room)}
        return {text for text, message_id in sent.items() if message_id in ids}

    assert found("你好") == {"我说你好世界", "世界你好", "hello你好"}
    assert found("世界") == {"我说你好世界", "世界你好", "こんにちは世界"}
    assert found("说你") == {"我说你好世界"}
    assert found("好你") == set()  # a phrase: its characters in that order, together
    assert found('"你好世界"') == {"我说你好世界"}
    assert found("-你好 世界") == {"こんにちは世界"}
    assert found("にち") == {"こんにちは世界"}
    assert found("hello") == {"hello你好"}
