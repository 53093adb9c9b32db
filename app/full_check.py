"""When a heartbeat compares everything this process holds with the database.

The heartbeat's reconciles (a node's presence rows against its connections, the
memberships of the users connected here against chat_members) each read a row per user
and room: 200,000 rows a beat for 10,000 users in 20 rooms, a fifth of a second of the
worker's CPU every few seconds, and as much of PostgreSQL's, for a comparison that finds
nothing almost always. What makes the two differ is seen where it happens: a database
operation that failed (a write not made, or committed with its answer lost), the bus away
(events lost), a heartbeat so late that the other nodes may have buried this one. Each of
those makes the next comparison due; so does FULL_CHECK_SECONDS passing, for what nothing
here saw (a row changed by hand).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

# The longest a difference nothing reported stays unrepaired; one comparison in this many
# seconds costs little.
FULL_CHECK_SECONDS = 60.0


class CountsFailures(Protocol):
    failures: int  # database operations that failed so far (db.Pool)


class FullCheck:
    """Whether the next full comparison is due, and the marks that make it so."""

    __slots__ = ("pool", "every_seconds", "clock", "_marked", "_failures_seen", "_next_at")

    def __init__(
        self,
        pool: CountsFailures,
        every_seconds: float = FULL_CHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.every_seconds = every_seconds
        self.clock = clock
        self._marked = True  # the first heartbeat compares: nothing is known yet
        self._failures_seen = pool.failures
        self._next_at = 0.0

    def mark(self) -> None:
        """Something may have made the two differ: compare at the next heartbeat."""
        self._marked = True

    def begin(self) -> bool:
        """Whether a comparison is due now. If so it counts as begun: a mark from now on,
        or the comparison failing (the caller marks), makes the next one due."""
        failures = self.pool.failures
        now = self.clock()
        if not (self._marked or failures != self._failures_seen or now >= self._next_at):
            return False
        self._marked = False
        self._failures_seen = failures
        self._next_at = now + self.every_seconds
        return True

    def run_if_due(self, compare: Callable[[], None]) -> None:
        """Run `compare` if a comparison is due; one that fails makes the next one due."""
        if not self.begin():
            return
        try:
            compare()
        except BaseException:
            self.mark()
            raise
