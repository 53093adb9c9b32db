"""Throwaway PostgreSQL databases with the schema loaded, and one-off queries against them."""

from __future__ import annotations

import os

import psycopg2

from app import schema
from tests.support.project import ROOT


def find_admin_url() -> str:
    """A PostgreSQL to create test databases in: TEST_ADMIN_DATABASE_URL, the local one, or embedded."""
    candidates = [os.environ.get("TEST_ADMIN_DATABASE_URL")] + [
        f"postgresql://{user}@127.0.0.1:5432/postgres" for user in ("postgres", "root")
    ]
    for url in filter(None, candidates):
        try:
            psycopg2.connect(url, connect_timeout=2).close()
            return url
        except psycopg2.OperationalError:
            continue
    import pgserver

    return pgserver.get_server(ROOT / "var" / "test-pgdata", cleanup_mode="stop").get_uri()


def create_database(admin_url: str, name: str) -> str:
    """Create database `name` with schema.sql loaded (its upgrades run, as `make db` does),
    and return its URL."""
    run_outside_a_transaction(admin_url, f'CREATE DATABASE "{name}"')
    url = database_url_for(admin_url, name)
    schema.load_schema(url)
    return url


def drop_database(admin_url: str, name: str) -> None:
    """Drop database `name`, closing whatever is still connected to it."""
    run_outside_a_transaction(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_outside_a_transaction(admin_url: str, statement: str) -> None:
    """Run one statement in autocommit: CREATE and DROP DATABASE refuse to run inside a transaction.

    The statement is built by the caller: a database name cannot be a query parameter.
    """
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def database_url_for(admin_url: str, name: str) -> str:
    """The URL of database `name` on the server of `admin_url`, with the same options."""
    base, _, query = admin_url.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + name
    return base + ("?" + query if query else "")


def sql(url: str, query: str, params: tuple | dict = ()) -> list[tuple]:
    """Run one query against the test database (what `psql` would show)."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            rows = cur.fetchall() if cur.description else []
        conn.commit()
        return rows
    finally:
        conn.close()


def seed_room(url: str, room: str, messages: int, content_bytes: int | None = None) -> None:
    """Make room `room` with `messages` old messages in it, as if sent.

    Their contents read 'old 1' ... 'old N', or are each `content_bytes` of 'y' when given
    (for answers of a known size).
    """
    sql(url, "INSERT INTO rooms (name, last_seq) VALUES (%s, %s)", (room, messages))
    sql(
        url,
        """INSERT INTO messages (from_user, room, content, seq)
           SELECT 1, %s, coalesce(repeat('y', %s), 'old ' || g), g FROM generate_series(1, %s) g""",
        (room, content_bytes, messages),
    )
