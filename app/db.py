"""PostgreSQL access: psycopg2 made cooperative under gevent, in a greenlet-safe pool.

Take a connection per operation, never for a socket's life: `with pool.autocommit() as
cur:` where each statement (or query string) stands alone, `pool.transaction()` where
several must commit together. Connection-level failures become `Unavailable`, and the
connection that failed is forgotten together with every idle one (after a server restart
they are all dead).
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras
from gevent.lock import BoundedSemaphore
from gevent.monkey import get_original
from gevent.socket import wait_read, wait_write

from .errors import ChatError, Unavailable
from .metrics import DB_SECONDS

log = logging.getLogger(__name__)

# Errors that mean "the connection or the server is gone", not "this statement is wrong".
CONNECTION_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)
# OperationalErrors that undo one statement and leave the connection fine (a deadlock, a
# serialization failure, a statement timeout): caught before CONNECTION_ERRORS.
STATEMENT_ROLLED_BACK = (psycopg2.errors.TransactionRollbackError, psycopg2.errors.QueryCanceled)


class BigintArray(list):
    """Integers for a bigint[] parameter, sent as one array literal.

    psycopg2 adapts a list element by element, through a Python adapter object for each
    (about 0.9 us an integer, 0.09 us written out at once): a crowd reconnecting sends arrays
    of thousands of ids a batch (app/resume_reads.py, Presence.tend_many). An element that
    is not an int fails the adaptation (int.__repr__ refuses it): nothing is sent.
    """


def _bigint_array_literal(ids: BigintArray) -> psycopg2.extensions.AsIs:
    elements = ",".join(map(int.__repr__, ids))
    return psycopg2.extensions.AsIs(f"'{{{elements}}}'::bigint[]")


psycopg2.extensions.register_adapter(BigintArray, _bigint_array_literal)


class TextArray(list):
    """Strings for a text[] parameter, sent as one quoted array literal (see BigintArray).

    psycopg2 quotes a list's strings one by one (about 0.8 us each): the batched reads and
    writes of a crowd reconnecting send thousands of room and user names a statement.
    Here the array literal is built in Python and quoted once, by psycopg2's own
    QuotedString (the connection's encoding and string syntax). An element that is not a
    str, or one holding NUL (PostgreSQL text cannot), is refused before anything is sent.
    """


class _TextArrayLiteral:
    """The adapter of a TextArray: its array literal as one quoted string, cast to text[]."""

    def __init__(self, values: TextArray) -> None:
        self.quoted = psycopg2.extensions.QuotedString(_text_array_literal(values))

    def prepare(self, conn) -> None:
        self.quoted.prepare(conn)

    def getquoted(self) -> bytes:
        return self.quoted.getquoted() + b"::text[]"


def _text_array_literal(values: list[str]) -> str:
    """The array literal of these strings, before SQL quoting."""
    if not values:
        return "{}"
    # Inside an array literal, double quotes keep each element whole (a comma, a brace, the
    # word NULL), and a backslash escapes a double quote or itself.
    elements = '","'.join(values)  # TypeError for anything but str
    # (each separator holds two double quotes: any more are the strings' own)
    if "\\" in elements or elements.count('"') != 2 * (len(values) - 1):
        elements = '","'.join(v.replace("\\", "\\\\").replace('"', '\\"') for v in values)
    return '{"' + elements + '"}'


psycopg2.extensions.register_adapter(TextArray, _TextArrayLiteral)


class BoolArray(list):
    """Booleans for a boolean[] parameter, sent as one array literal (see BigintArray:
    psycopg2 adapts a list of booleans at about 1.3 us each)."""


def _bool_array_literal(flags: BoolArray) -> psycopg2.extensions.AsIs:
    elements = ",".join("t" if flag else "f" for flag in map(_strict_bool, flags))
    return psycopg2.extensions.AsIs(f"'{{{elements}}}'::boolean[]")


def _strict_bool(flag: object) -> bool:
    if flag is not True and flag is not False:
        raise TypeError(f"not a bool: {flag!r}")
    return flag


psycopg2.extensions.register_adapter(BoolArray, _bool_array_literal)


def gevent_wait_callback(conn, timeout=None) -> None:
    """Let other greenlets run while psycopg2 waits on the server's socket."""
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        if state == psycopg2.extensions.POLL_READ:
            wait_read(conn.fileno(), timeout=timeout)
        elif state == psycopg2.extensions.POLL_WRITE:
            wait_write(conn.fileno(), timeout=timeout)
        else:
            raise psycopg2.OperationalError(f"bad poll state: {state!r}")


def make_cooperative() -> None:
    psycopg2.extensions.set_wait_callback(gevent_wait_callback)


def connect(
    dsn: str,
    connect_timeout: int = 3,
    autocommit: bool = False,
    setup: Callable[[Any], None] | None = None,
    statement_timeout_ms: int = 0,
):
    """One new connection in UTC, with TCP keepalives so that a vanished server is noticed.

    `setup(cursor)` runs on it first, in autocommit (the connection is closed if it fails).
    `statement_timeout_ms` is the connection's default statement_timeout (0: none).
    """
    options = "-c timezone=UTC"
    if statement_timeout_ms > 0:
        options += f" -c statement_timeout={statement_timeout_ms}"
    conn = psycopg2.connect(
        dsn,
        connect_timeout=connect_timeout,
        options=options,
        application_name="chat-server",
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=3,
    )
    if setup is not None:
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                setup(cur)
        except BaseException:
            conn.close()
            raise
    conn.autocommit = autocommit
    return conn


class Pool:
    """A bounded pool: blocks when every connection is in use, forgets broken ones."""

    def __init__(
        self,
        dsn: str,
        size: int = 8,
        connect_timeout: int = 3,
        acquire_timeout: float = 5.0,
        setup: Callable[[Any], None] | None = None,
        statement_timeout: float = 0.0,
    ) -> None:
        self.dsn = dsn
        self.size = size
        self.connect_timeout = connect_timeout
        self.acquire_timeout = acquire_timeout
        # Seconds any statement of a lent connection may run, lock waits included (0: no
        # limit). A statement cut short raises Unavailable, as a serialization failure does.
        self.statement_timeout_ms = round(statement_timeout * 1000)
        # run on every new connection, in autocommit (to prepare statements, say)
        self.setup = setup
        self._idle: list = []
        self._slots = BoundedSemaphore(size)
        # Operations that failed (the database away or busy, or an unexpected error): what
        # they were to write may be missing, or committed with its answer lost. The
        # heartbeat's reconciles compare everything after one (app/full_check.py).
        self.failures = 0

    @contextmanager
    def connection(self) -> Iterator:
        """Lend one connection; broken ones are closed instead of returned."""
        if not self._slots.acquire(timeout=self.acquire_timeout):
            self.failures += 1
            raise Unavailable("database is busy: no connection free, retry later")
        conn = None
        try:
            try:
                while self._idle and conn is None:
                    conn = self._idle.pop()
                    if closed_by_server(conn):
                        self._forget(conn)  # and every idle one: after a restart all are dead
                        conn = None
                if conn is None:
                    conn = connect(
                        self.dsn, self.connect_timeout, setup=self.setup, statement_timeout_ms=self.statement_timeout_ms
                    )
            except CONNECTION_ERRORS as exc:
                log.warning("database connection failed: %s", first_line(exc))
                raise Unavailable("database is unavailable, retry later") from None
            yield conn
        except STATEMENT_ROLLED_BACK as exc:
            self.failures += 1
            log.warning("database statement rolled back: %s", first_line(exc))
            raise Unavailable("database is busy, retry later") from None
        except CONNECTION_ERRORS as exc:
            self.failures += 1
            self._forget(conn)
            conn = None
            log.warning("database connection lost: %s", first_line(exc))
            raise Unavailable("database is unavailable, retry later") from None
        except BaseException as exc:
            # (A refusal the caller raised, not_found say, changed nothing it meant to.)
            if not isinstance(exc, ChatError) or isinstance(exc, Unavailable):
                self.failures += 1
            raise
        finally:
            if conn is not None:
                if conn.closed or conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                    self._forget(conn)
                else:
                    self._idle.append(conn)
            self._slots.release()

    @contextmanager
    def transaction(self) -> Iterator:
        """A cursor in one transaction: commit when the block ends, roll back if it raises."""
        with self.connection() as conn:
            started = time.perf_counter()
            try:
                with conn.cursor() as cur:
                    yield cur
                conn.commit()
            except BaseException:
                if not conn.closed:
                    try:
                        conn.rollback()
                    except CONNECTION_ERRORS:
                        pass
                raise
            finally:
                DB_SECONDS.observe(time.perf_counter() - started)

    @contextmanager
    def autocommit(self) -> Iterator:
        """A cursor whose every `execute` is a transaction of its own, in one round trip.

        `transaction()` costs two more (psycopg2 sends BEGIN and COMMIT as statements of their
        own), each waiting for the event loop to come round. Use this for one statement, or for a
        query string of several (which PostgreSQL runs as one transaction).
        """
        with self.connection() as conn:
            started = time.perf_counter()
            conn.autocommit = True  # a flag of psycopg2's: nothing is sent
            try:
                with conn.cursor() as cur:
                    yield cur
            finally:
                if not conn.closed:
                    conn.autocommit = False
                DB_SECONDS.observe(time.perf_counter() - started)

    def _forget(self, conn) -> None:
        """Close a broken connection and every idle one: after a restart all are dead."""
        stale, self._idle = self._idle, []
        for each in [conn, *stale]:
            if each is not None and not each.closed:
                try:
                    each.close()
                except Exception:
                    pass

    def close(self) -> None:
        self._forget(None)


class SingleConnection:
    """One autocommit connection owned by one greenlet (the group commit).

    Every statement is its own transaction and its own round trip. `setup(cursor)` runs on
    every new connection (to prepare statements, say).
    """

    def __init__(self, dsn: str, connect_timeout: int, setup: Callable[[Any], None] | None = None) -> None:
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self.setup = setup
        self.conn = None

    def run(self, work):
        """`work(cursor)` as one statement's transaction; returns what it returns.

        Connection failures raise Unavailable and are never retried here: a statement
        whose connection died may have committed, and only a resend with its clientId
        is safe then.
        """
        for attempt in (1, 2):
            if self.conn is not None and closed_by_server(self.conn):
                self.close()
            try:
                if self.conn is None:
                    self.conn = connect(self.dsn, self.connect_timeout, autocommit=True, setup=self.setup)
                started = time.perf_counter()
                with self.conn.cursor() as cur:
                    result = work(cur)
                DB_SECONDS.observe(time.perf_counter() - started)
                return result
            except psycopg2.errors.InvalidSqlStatementName:
                # Our prepared statements are gone (DISCARD ALL by a connection pooler in
                # between): nothing ran, and a new connection prepares them again. psycopg2
                # counts this error as an OperationalError: it must be caught before those.
                self.close()
                if attempt == 2:
                    raise
            except psycopg2.errors.QueryCanceled as exc:
                # Cancelled (its statement_timeout, say): nothing was committed, and its
                # senders have waited long enough. (An OperationalError too.)
                log.warning("database statement cancelled: %s", first_line(exc))
                raise Unavailable("database is busy, nothing was stored: retry later") from None
            except STATEMENT_ROLLED_BACK as exc:
                # Rolled back whole (two batches locked rooms crosswise, say): nothing was
                # committed, so running it once more is safe. (An OperationalError too:
                # caught before those.)
                log.warning("database statement rolled back: %s", first_line(exc))
                if attempt == 2:
                    raise Unavailable("database is busy, retry later") from None
            except CONNECTION_ERRORS as exc:
                self.close()
                log.warning("database unavailable: %s", first_line(exc))
                raise Unavailable("database is unavailable, retry later") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None


# The operating system's poll(), which gevent's patching removes: select() cannot watch a
# descriptor above 1023, and a worker holds thousands of client sockets.
_os_poll = get_original("select", "poll")


def readable(fd: int) -> bool:
    """Whether a descriptor has something to read now (never waits)."""
    poller = _os_poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def closed_by_server(conn) -> bool:
    """Whether the server closed an idle connection (a restart, an administrator).

    Nothing else is sent to an idle connection that does not LISTEN, so anything to read means closed.
    """
    try:
        return readable(conn.fileno())
    except (OSError, ValueError, psycopg2.InterfaceError):
        return True


def first_line(exc: Exception) -> str:
    """An error's first line, for a log line (PostgreSQL's messages go on with context)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def ping(dsn: str, timeout: int = 2) -> bool:
    """True when the database answers a trivial query within `timeout` seconds."""
    try:
        conn = connect(dsn, connect_timeout=timeout)
    except CONNECTION_ERRORS:
        return False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        return True
    except CONNECTION_ERRORS:
        return False
    finally:
        conn.close()
