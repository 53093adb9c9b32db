"""The search index's pending entries, merged in the background (app/search_merge.py)."""

from __future__ import annotations

import logging
from contextlib import contextmanager

import psycopg2
import psycopg2.errors
import pytest

from app import search_merge
from app.db import Pool
from app.errors import Unavailable
from tests.support.clients import connect_to, join
from tests.support.databases import sql
from tests.support.identities import unique
from tests.support.servers import Server
from tests.support.waiting import wait_for


def store_messages(url: str, count: int) -> None:
    sql(
        url,
        "INSERT INTO messages (from_user, room, content)"
        " SELECT 1, 'r', 'lorem ipsum ' || n FROM generate_series(1, %s) AS n",
        (count,),
    )


def test_a_merge_empties_the_pending_list_into_the_index(fresh_database):
    url = fresh_database()
    store_messages(url, 500)
    pool = Pool(url, size=1)
    try:
        assert search_merge.merge_once(pool) > 0
        assert search_merge.merge_once(pool) == 0  # nothing left pending
    finally:
        pool.close()
    found = sql(url, "SELECT count(*) FROM messages WHERE search_words @@ to_tsquery('simple', 'ipsum & 250')")
    assert found == [(1,)]


def test_a_merge_under_way_elsewhere_is_not_waited_for(fresh_database):
    """One merge at a time over all workers: the others skip their turn instead of queueing."""
    url = fresh_database()
    store_messages(url, 100)
    elsewhere = psycopg2.connect(url)
    pool = Pool(url, size=1)
    try:
        with elsewhere.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (search_merge.MERGE_LOCK_KEY,))
            assert search_merge.merge_once(pool) is None
        elsewhere.rollback()
        assert search_merge.merge_once(pool) > 0  # the entries were left pending
    finally:
        pool.close()
        elsewhere.close()


def pending_entries(url: str) -> int:
    """The tuples in the search index's pending list, read without touching it."""
    query = "SELECT n_pending_tuples FROM gin_metapage_info(get_raw_page('messages_search_scoped', 0))"
    return sql(url, query)[0][0]


def test_a_server_merges_the_pending_entries_of_the_messages_it_stores(fresh_database):
    url = fresh_database()
    try:
        sql(url, "CREATE EXTENSION IF NOT EXISTS pageinspect")
    except psycopg2.errors.UndefinedFile:
        pytest.skip("this PostgreSQL lacks contrib's pageinspect")
    srv = Server(url).start()
    try:
        room = unique("merged")
        client = connect_to(srv)
        join(client, room)
        for n in range(20):
            client.send({"type": "message", "room": room, "content": f"words to merge {n}"})
            client.expect("message", room=room, content=f"words to merge {n}")
        wait_for(lambda: pending_entries(url) == 0, 10, "the pending entries merged by the server")
        client.send({"type": "search", "query": "merge", "room": room})
        assert len(client.expect("search", query="merge")["data"]) == 20
        client.close()
    finally:
        srv.stop()


class FailingPool:
    """A pool whose connections fail as listed, then end the test's loop."""

    def __init__(self, failures: list[BaseException | None]) -> None:
        self.failures = failures

    @contextmanager
    def autocommit(self):
        failure = self.failures.pop(0)
        if failure is not None:
            raise failure
        yield FakeCursor()


class FakeCursor:
    def execute(self, query: str, params: dict) -> None:
        pass

    def fetchone(self) -> tuple[int]:
        return (0,)


class NotOwner(psycopg2.errors.InsufficientPrivilege):
    pass


def test_the_merger_says_once_per_failure_and_stops_for_a_user_that_may_not(caplog):
    """The database away: silent retries. Another failure: one line until a turn succeeds.
    Not the index's owner: one line, and autovacuum and the full list's insert merge it."""
    failures = [
        Unavailable("away"),
        psycopg2.errors.LockNotAvailable("busy"),
        psycopg2.errors.LockNotAvailable("busy"),
        None,
        psycopg2.errors.LockNotAvailable("busy again"),
        NotOwner("must be owner"),
    ]
    pool = FailingPool(failures)
    with caplog.at_level(logging.WARNING, logger="app.search_merge"):
        search_merge.merge_forever(pool, interval_seconds=0)  # returns: it stopped
    assert failures == []
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 3
    assert "failed: busy" in lines[0] and "failed: busy again" in lines[1]
    assert "does not own messages_search_scoped" in lines[2]
