"""Bringing a database up to this server's schema.sql: new, or made by an earlier version.

A server start (ensure_schema) loads it only when something is missing, since its ALTER
TABLEs take locks; `make db` (app/cli.py) loads it always. Either way, the rewrites that
schema.sql cannot spell in SQL (app/upgrades.py) follow in the same transaction.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import psycopg2

from . import upgrades
from .db import CONNECTION_ERRORS, connect, first_line

log = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema.sql"

# The tables and sequences schema.sql creates: when one is missing the database is new (or
# predates it).
SCHEMA_RELATIONS = tuple(re.findall(r"CREATE (?:TABLE|SEQUENCE) IF NOT EXISTS (\w+)", SCHEMA_PATH.read_text()))
# The columns it adds to them since: when one is missing the database predates this server.
SCHEMA_COLUMNS = tuple(re.findall(r"ALTER TABLE (\w+) ADD COLUMN IF NOT EXISTS (\w+)", SCHEMA_PATH.read_text()))
# Held while schema.sql runs, so that workers starting together (or `make db` beside them)
# do not create the same tables at once (an arbitrary key of this application).
SCHEMA_LOCK_KEY = 0x63686174  # "chat"


def load_schema(dsn: str, only_if_missing: bool = False, connect_timeout: int = 3) -> list[str]:
    """Apply schema.sql and the upgrades not done (app/upgrades.py); return what was
    missing: tables, columns ("table.column") and upgrades.

    Every statement in it is safe to run again. With `only_if_missing`, apply it only if
    something was missing.
    """
    conn = connect(dsn, connect_timeout=connect_timeout)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
            cur.execute(
                "SELECT name FROM unnest(%s) AS name WHERE to_regclass(name) IS NULL", (list(SCHEMA_RELATIONS),)
            )
            missing = [row[0] for row in cur]
            cur.execute(
                """SELECT t || '.' || c FROM unnest(%s::text[], %s::text[]) AS added(t, c)
                   WHERE to_regclass(t) IS NOT NULL AND NOT EXISTS (
                       SELECT 1 FROM pg_attribute
                       WHERE attrelid = to_regclass(t) AND attname = c AND NOT attisdropped)""",
                ([t for t, _ in SCHEMA_COLUMNS], [c for _, c in SCHEMA_COLUMNS]),
            )
            missing += [row[0] for row in cur]
            # (a database without chat_upgrades has had none of them)
            undone = list(upgrades.UPGRADES) if "chat_upgrades" in missing else upgrades.pending(cur)
            if missing or undone or not only_if_missing:
                cur.execute(SCHEMA_PATH.read_text())
                upgrades.run(cur, undone)
        conn.commit()
        return missing + [f"the upgrade of {name}" for name in undone]
    finally:
        conn.close()


def ensure_schema(dsn: str, connect_timeout: int = 3) -> None:
    """Load schema.sql if a table, column or upgrade of it is missing, so that new and older databases work.

    Only then: schema.sql's ALTER TABLEs take locks that stall every query behind them
    for as long as they wait (an upgrade takes them once). Failures are logged, not
    raised (the database may be down for now, or the role not allowed to alter).
    """
    try:
        missing = load_schema(dsn, only_if_missing=True, connect_timeout=connect_timeout)
    except CONNECTION_ERRORS as exc:
        log.warning("schema not checked: database unreachable (%s)", first_line(exc))
    except psycopg2.Error as exc:
        log.error("could not load the schema (%s): run `make db` as a role that may", first_line(exc))
    else:
        if missing:
            log.info("schema loaded (the database lacked %s)", ", ".join(missing))
