"""Merge the search index's pending entries in the background, so no batch of messages pays.

Each message adds about fifteen entries to `messages_search_scoped` (its words and the
lexemes of its scope, schema.sql). Written into the index one at a time, each entry
would rewrite and log a piece of its posting list: four fifths of the WAL a message costs,
a 16 MB segment every second or so on a busy server. With GIN's pending list
(`fastupdate`), an insert appends all its entries in one write, and a merge moves many
messages' entries into the index sorted, each posting list once for all of them.

The insert that finds the pending list full (`gin_pending_list_limit`, 4 MB) would merge it
inside its own statement, and that statement is a batch of messages everyone is waiting
for. So every worker merges it here, often enough that no insert finds it full, on a pooled
connection, one worker at a time across the deployment (an advisory lock tried, never
waited for). A search reads the pending list as well as the index, so a message is found
as soon as it is stored; keeping the list short keeps that read short.
"""

from __future__ import annotations

import logging

import gevent
import psycopg2.errors

from .db import Pool
from .errors import ChatError

log = logging.getLogger(__name__)

# How often a worker merges: 3,000 messages leave about 600 KB of entries pending (79
# pages), a seventh of the 4 MB that would make a batch of messages merge them.
MERGE_INTERVAL_SECONDS = 1.0
# The search index whose pending list is merged (schema.sql).
SEARCH_INDEX = "messages_search_scoped"
# One merge at a time over every worker and host: the others' turns would find it empty or
# wait behind it (an arbitrary key of this application).
MERGE_LOCK_KEY = 0x63686D67  # "chmg"

MERGE_SQL = """SELECT gin_clean_pending_list(%(index)s::regclass)
               WHERE pg_try_advisory_xact_lock(%(lock)s)"""


def merge_once(pool: Pool) -> int | None:
    """Merge the pending list into the index; return the pages merged, None if another
    worker is merging it now."""
    with pool.autocommit() as cur:
        cur.execute(MERGE_SQL, {"index": SEARCH_INDEX, "lock": MERGE_LOCK_KEY})
        row = cur.fetchone()
    return None if row is None else row[0]


def merge_forever(pool: Pool, interval_seconds: float = MERGE_INTERVAL_SECONDS) -> None:
    """Merge once every `interval_seconds`, until a database user that may not (only the
    index's owner may) stops it: then autovacuum and the full list's insert merge it."""
    failing = False  # the last turn failed and said so: one line a failure, not one a second
    while True:
        gevent.sleep(interval_seconds)
        try:
            merge_once(pool)
        except ChatError:
            continue  # the database away: the next turn tries again
        except psycopg2.errors.InsufficientPrivilege:
            log.warning(
                "search index: this database user does not own %s, so its pending entries are "
                "merged by autovacuum and by the insert that fills the list, not in the background",
                SEARCH_INDEX,
            )
            return
        except psycopg2.Error as exc:
            if not failing:
                log.warning("search index: merging its pending entries failed: %s", str(exc).strip())
            failing = True
            continue
        failing = False
