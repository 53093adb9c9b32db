"""Who is connected at all, across every process and host: user_presence in PostgreSQL.

Room presence (app/presence.py) knows who is in which room; `users` needs to know who has
any connection, in a room or not. Each process keeps one user_presence row per user with a
connection here: written when the user's first connection here opens, removed when the
last one closes. A process that dies leaves its rows behind until the others bury it with
its room_presence rows (Presence._bury_dead_nodes); until then readers skip rows of nodes
whose heartbeat is too old, as they do for room_presence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

from . import store
from .batched import Batched
from .db import Pool
from .errors import ChatError
from .presence import KeyedLocks

log = logging.getLogger(__name__)

# Rows written or removed by one statement at most, and greenlets doing so at once: a crowd
# connecting at once (after a restart), or dropped at once (a network blip), is a few
# statements and commits, not one each.
WRITE_BATCH_MAX = 500
WRITERS_MAX = 2


class RowChanges(Batched[int, None]):
    """One change to this process's user_presence rows (`store.add_users_online` or
    `store.remove_users_online`), for many users a statement."""

    def __init__(self, pool: Pool, node_id: str, change: Callable[[Any, list[int], str], None]) -> None:
        super().__init__(WRITE_BATCH_MAX, WRITERS_MAX)
        self.pool = pool
        self.node_id = node_id
        self.change = change

    def answer_batch(self, user_ids: list[int]) -> list[None]:
        with self.pool.autocommit() as cur:
            self.change(cur, sorted(set(user_ids)), self.node_id)
        return [None] * len(user_ids)


class UsersOnline:
    """This process's user_presence rows, kept equal to the users connected here."""

    def __init__(self, pool: Pool, node_id: str, connected_here: Callable[[], Collection[int]]) -> None:
        self.pool = pool
        self.node_id = node_id
        # The users with an authenticated connection here now (the hub's table).
        self.connected_here = connected_here
        # users whose row this process has written and not removed
        self.written: set[int] = set()
        # A write failed (the database away): the next heartbeat writes every row again.
        self.dirty = False
        self._locks = KeyedLocks()
        self._row_writes = RowChanges(pool, node_id, store.add_users_online)
        self._row_removals = RowChanges(pool, node_id, store.remove_users_online)

    def connected(self, user_id: int) -> None:
        """A connection of the user opened here (and is in `connected_here` already).

        One lock per user: the statement of a first connection and that of a last one
        closing meanwhile run one after the other, so the row stays if a connection remains.
        """
        with self._locks.hold(user_id):
            if user_id in self.written:
                return
            try:
                self._row_writes.ask(user_id)  # with those of the others connecting meanwhile
            except ChatError:
                self.dirty = True
                return
            self.written.add(user_id)

    def disconnected(self, user_id: int) -> None:
        """A connection of the user closed here (and is out of `connected_here` already)."""
        with self._locks.hold(user_id):
            if user_id in self.connected_here() or user_id not in self.written:
                return
            try:
                self._row_removals.ask(user_id)  # with those of the others leaving meanwhile
            except ChatError:
                self.dirty = True
                return
            self.written.discard(user_id)

    def repair(self) -> None:
        """A step of the heartbeat: write this process's rows again when they may be wrong.

        Wrong after a failed write, and after the others buried this process (its heartbeat
        late: a pause, the database away), which removed its rows; both are found by a
        count, and the rows are then made the users connected here now. A connection
        opening or closing during that round trip may be written over: the next
        heartbeat's count finds it.
        """
        here = list(self.connected_here())
        with self.pool.autocommit() as cur:
            if not self.dirty and store.users_noted_online(cur, self.node_id) == len(here):
                return
        self.dirty = False
        try:
            with self.pool.transaction() as cur:
                store.note_users_online(cur, here, self.node_id)
        except ChatError:
            self.dirty = True
            raise
        self.written = set(here)
        log.info("wrote again the %d user(s) connected here", len(here))
