"""One lock per key (a room and a user, say), existing only while someone holds or waits for it.

Presence takes one per (room, user) it changes: at a reconnect, one for each of the user's
rooms, and a crowd reconnecting takes a thousand at a time (Presence.tend_many). So the
`with` block is a small class rather than a contextlib generator, and `hold_all` takes many
in one block rather than an ExitStack of single ones: a generator, its context manager
object and the stack's callbacks cost several times what the locks themselves do.
"""

from __future__ import annotations

from collections.abc import Sequence

from gevent.lock import Semaphore


class KeyedLocks:
    """A lock per key, made at its first holder or waiter and dropped after its last."""

    def __init__(self) -> None:
        self._locks: dict[object, list] = {}  # key -> [lock, holders and waiters]

    def hold(self, key: object) -> Held:
        """`with` it: the key's lock is held inside the block."""
        return Held(self, (key,))

    def hold_all(self, keys: Sequence[object]) -> Held:
        """`with` it: every key's lock is held inside the block.

        They are taken in the order given: callers that may hold keys in common must give
        them in one order (sorted, say), or two of them can wait for each other forever.
        """
        return Held(self, keys)

    def __len__(self) -> int:
        """How many keys have a lock now (held or waited for)."""
        return len(self._locks)

    def _acquire(self, key: object) -> None:
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = [Semaphore(), 0]
        entry[1] += 1
        try:
            entry[0].acquire()
        except BaseException:  # killed or timed out while waiting: not held
            self._forget(key, entry)
            raise

    def _release(self, key: object) -> None:
        entry = self._locks[key]
        entry[0].release()
        self._forget(key, entry)

    def _forget(self, key: object, entry: list) -> None:
        entry[1] -= 1
        if not entry[1]:
            del self._locks[key]


class Held:
    """The `with` block of KeyedLocks.hold and hold_all."""

    __slots__ = ("locks", "keys")

    def __init__(self, locks: KeyedLocks, keys: Sequence[object]) -> None:
        self.locks = locks
        self.keys = keys

    def __enter__(self) -> None:
        taken = 0
        try:
            for key in self.keys:
                self.locks._acquire(key)
                taken += 1
        except BaseException:
            for key in reversed(self.keys[:taken]):
                self.locks._release(key)
            raise

    def __exit__(self, *exc_info: object) -> None:
        for key in reversed(self.keys):
            self.locks._release(key)
