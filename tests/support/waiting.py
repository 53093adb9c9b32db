"""Waiting for an event by polling, for the events nothing announces."""

from __future__ import annotations

import time


def wait_for(predicate, timeout: float, what: str, pause: float = 0.02):
    """Poll `predicate` until it returns something true (returned), or fail naming `what`.

    For events nothing announces (a process listening, a server noticing a dead peer);
    where a frame or a thread announces the event, wait for that instead.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(pause)
