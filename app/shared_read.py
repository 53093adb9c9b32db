"""A value read from the database at most once in a while, however many ask for it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

from gevent.event import AsyncResult

T = TypeVar("T")


class SharedRead(Generic[T]):
    """The result of `read()`, read again only once it is `max_age_seconds` old.

    Callers in between get the last result; callers while a read is running wait for it
    instead of reading too. So when a crowd asks at once (every member of a room that
    heard a join), the database answers once.
    """

    __slots__ = ("read", "max_age_seconds", "_value", "_read_at", "_reading")

    def __init__(self, read: Callable[[], T], max_age_seconds: float) -> None:
        self.read = read
        self.max_age_seconds = max_age_seconds
        self._value: T | None = None
        self._read_at = 0.0
        self._reading: AsyncResult | None = None

    @property
    def latest(self) -> T | None:
        """The last result read, however old (None before the first read), to keep current in place."""
        return self._value

    def refresh(self) -> T:
        """Read again now, after any read already running (its snapshot may predate the caller's change)."""
        if self._reading is not None:
            try:
                self._reading.get()
            except Exception:
                pass  # failed: ours reads anyway
        self._read_at = float("-inf")
        return self.get()

    def would_read(self) -> bool:
        """Whether `get` would start a read now: the value is old (or missing) and no read runs."""
        return self._reading is None and not self._fresh()

    def _fresh(self) -> bool:
        return self._value is not None and time.monotonic() - self._read_at < self.max_age_seconds

    def get(self) -> T:
        if self._fresh():
            return self._value  # type: ignore[return-value]  (fresh: not None)
        if self._reading is not None:
            return self._reading.get()
        reading = self._reading = AsyncResult()
        started = time.monotonic()
        try:
            value = self.read()
        except BaseException as exc:
            reading.set_exception(exc)
            raise
        finally:
            self._reading = None
        self._value, self._read_at = value, started
        reading.set(value)
        return value
