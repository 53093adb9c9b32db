"""A rate limit for guesses: each key's attempts are spaced out, further after each failure.

The first few attempts on a key run at once; from then on each must start a growing
delay after the one before it, up to one attempt per `max_delay` seconds. The delay is a
reservation, not a sleep counted from each attempt's arrival: attempts sent at once
queue one behind the other, so N parallel requests are still one guess per delay, not N.
An attempt that would have to
wait longer than `max_wait` is refused with the time after which to retry, and not
counted: a flood holds no request open.

Whoever makes attempts on a key can get it refused, so a key must belong to the guesser
(sign-in uses the client address, and the username from that address), never to the
victim alone: refusals keyed by username would let anyone lock a user out.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


class TooManyAttempts(Exception):
    """Refused without being tried: retry in `retry_after` seconds (rounded up)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many attempts: retry in {math.ceil(retry_after)} s")
        self.retry_after = math.ceil(retry_after)


@dataclass(slots=True)
class KeyState:
    failures: int  # attempts not followed by a success
    free_at: float  # monotonic time from which its next attempt may start
    seen_at: float  # its last attempt, for forgetting it


class Throttle:
    """Per-key attempt spacing; keys are whatever identifies a guesser (address, username)."""

    def __init__(
        self,
        free_attempts: int = 3,
        first_delay_seconds: float = 0.25,
        max_delay_seconds: float = 5.0,
        max_wait_seconds: float = 5.0,
        memory_seconds: float = 15 * 60,
        max_keys: int = 10_000,
    ) -> None:
        self.free_attempts = free_attempts
        self.first_delay = first_delay_seconds
        self.max_delay = max_delay_seconds
        self.max_wait = max_wait_seconds
        self.memory = memory_seconds
        # Keys are whatever clients send (usernames): a spray of them must not grow the
        # table without bound. The least recently tried go first: the keys of an attack
        # in progress, touched at each of its attempts, stay.
        self.max_keys = max_keys
        # key -> its state, least recently tried first (each attempt moves its keys last)
        self.states: dict[str, KeyState] = {}

    def delay_after(self, failures: int) -> float:
        """The spacing after a key's `failures`-th failure: 0 for the free ones, then doubling."""
        if failures < self.free_attempts:
            return 0.0
        # The exponent is capped: 2 ** n overflows a float past n = 1023 (a long attack).
        return min(self.max_delay, self.first_delay * 2 ** min(failures - self.free_attempts, 30))

    def reserve(self, keys: list[str], now: float | None = None) -> float:
        """Count an attempt against each key; return how long it must wait before it runs.

        Raises TooManyAttempts (nothing counted) when that wait would pass `max_wait`.
        """
        return reserve_together([(self, key) for key in keys], now)

    def _free_at(self, key: str, now: float) -> float:
        state = self.states.get(key)
        return now if state is None else max(now, state.free_at)

    def _count(self, key: str, start: float, now: float) -> None:
        state = self.states.pop(key, None) or KeyState(0, now, now)  # re-inserted last
        state.failures += 1
        state.free_at = start + self.delay_after(state.failures)
        state.seen_at = now
        self.states[key] = state
        while len(self.states) > self.max_keys:
            del self.states[next(iter(self.states))]

    def forget(self, key: str) -> None:
        """The key's guesses are over (its user signed in): it starts afresh."""
        self.states.pop(key, None)

    def uncount(self, key: str) -> None:
        """The attempt just reserved on `key` succeeded: it was no failure.

        For a key shared by many users (an address), which a success must not wipe: a
        guesser with an account of its own would sign in between guesses.
        """
        state = self.states.get(key)
        if state is not None and state.failures > 0:
            state.failures -= 1

    def forget_older_than(self, moment: float) -> None:
        while self.states:
            oldest = next(iter(self.states))
            if self.states[oldest].seen_at >= moment:
                break
            del self.states[oldest]


def reserve_together(claims: list[tuple[Throttle, str]], now: float | None = None) -> float:
    """Reserve one attempt against keys of several throttles; return how long it must wait.

    It starts when the last of the keys is free, or is refused (TooManyAttempts) by the first
    that would make it wait longer than its `max_wait`, and then counts against none.
    """
    now = time.monotonic() if now is None else now
    start = now
    for throttle, key in claims:
        throttle.forget_older_than(now - throttle.memory)
        free_at = throttle._free_at(key, now)
        if free_at - now > throttle.max_wait:
            raise TooManyAttempts(free_at - now)
        start = max(start, free_at)
    for throttle, key in claims:
        throttle._count(key, start, now)
    return start - now
