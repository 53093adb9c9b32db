"""Users made here (create-user, the `token` command, the demo users), beside the issuer's.

Ids. A token's user is stored under the issuer's id, which never moves users.id's
sequence. A user made here draws its id from that sequence (on the existing backend's
database it is that backend's own, so neither hands out an id the other has) and skips
the ids tokens took already: a token's id, however large, never exhausts the sequence or
collides with a later local user.

Passwords. Only a user made here with a password may have one. A user without one is the
token issuer's (or was made by `token`): giving its row a password would hand whoever
signs in with it that user's direct messages, so that is refused, always.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2.errors

from . import db

# Runs of taken ids skipped before giving up: each skip jumps past a whole run of
# consecutive ids, so more than a few mean something else keeps taking them.
MAX_ID_SKIPS = 5


class Refused(Exception):
    """The account cannot be made or changed so; the message says why."""


def create_user(dsn: str, username: str, password_hash: str, reset_password: bool = False) -> tuple[int, bool]:
    """Make a user who signs in with a password; return (its id, whether it is new).

    A user of that name who has a password gets the new one only with `reset_password`;
    one without a password (a token's) never gets one. `username` is a local name already
    (app/names.py).
    """
    with _transaction(dsn) as cur:
        found = _by_name(cur, username)
        if found is None:
            user_id = _insert(cur, username, password_hash)
            if user_id is not None:
                return user_id, True
            found = _by_name(cur, username)  # made by a token meanwhile
            assert found is not None
        user_id, has_password = found
        if not has_password:
            raise Refused(
                f"{username} (id {user_id}) is a user of the tokens' issuer: a password here would give "
                "whoever signs in with it that user's messages. Choose another name."
            )
        if not reset_password:
            raise Refused(f"{username} (id {user_id}) exists already: add --reset-password to give it a new password")
        cur.execute("UPDATE users SET password = %s WHERE id = %s", (password_hash, user_id))
        return user_id, False


def token_user(dsn: str, username: str) -> int:
    """The id of the user named `username`, made without a password when there is none."""
    with _transaction(dsn) as cur:
        found = _by_name(cur, username)
        if found is None:
            user_id = _insert(cur, username, None)
            found = (user_id, False) if user_id is not None else _by_name(cur, username)
            assert found is not None
        return found[0]


@contextmanager
def _transaction(dsn: str) -> Iterator:
    conn = db.connect(dsn)
    try:
        with conn, conn.cursor() as cur:  # commits, or rolls back on an exception
            yield cur
    finally:
        conn.close()


def _by_name(cur, username: str) -> tuple[int, bool] | None:
    """(id, whether it has a password) of the user named so, locked; None if there is none."""
    cur.execute("SELECT id, password IS NOT NULL FROM users WHERE username = %s FOR UPDATE", (username,))
    row = cur.fetchone()
    return (row[0], row[1]) if row else None


def _insert(cur, username: str, password_hash: str | None) -> int | None:
    """Add the user under the sequence's next free id; None if the name was taken meanwhile."""
    for _ in range(MAX_ID_SKIPS):
        try:
            cur.execute("SELECT nextval(pg_get_serial_sequence('users', 'id'))")
        except psycopg2.errors.SequenceGeneratorLimitExceeded:
            raise Refused(
                "users.id's sequence is at its end (an older version moved it past a token's id): "
                "set it back to the highest id of a user made here, with setval()"
            ) from None
        user_id = cur.fetchone()[0]
        cur.execute(
            """INSERT INTO users (id, username, password) VALUES (%s, %s, %s)
               ON CONFLICT DO NOTHING RETURNING id""",
            (user_id, username, password_hash),
        )
        if cur.fetchone():
            return user_id
        cur.execute("SELECT 1 FROM users WHERE username = %s", (username,))
        if cur.fetchone():
            return None
        _skip_taken_ids(cur, user_id)
    raise Refused("no free user id found: ids are being taken as fast as they are drawn")


def _skip_taken_ids(cur, taken: int) -> None:
    """Move the sequence, never backwards, to the end of the run of consecutive ids (tokens') from `taken`."""
    cur.execute(
        """SELECT setval(pg_get_serial_sequence('users', 'id'), GREATEST(
               (SELECT max(id) FROM (SELECT id, id - row_number() OVER (ORDER BY id) AS run
                                     FROM users WHERE id >= %(taken)s) ids
                WHERE run = %(taken)s - 1),
               pg_sequence_last_value(pg_get_serial_sequence('users', 'id')::regclass)))""",
        {"taken": taken},
    )
