"""Stretches of code that must run to their end without letting another greenlet run.

Some orders hold only because nothing yields between two steps: a connection listed in
its rooms gets `welcome` (or `join_ack`) before any live message of those rooms, because
the event loop, which delivers them, does not run in between. One round trip to the
database there (a log line that blocks, a lock that waits) would break the order silently,
so `not_yielding` makes such a stretch fail loudly instead: the first switch away from the
greenlet inside it raises `Yielded` once the stretch ends.

It watches with greenlet's switch tracer, installed for the stretch only: a stretch that
keeps its promise runs no tracer call at all, so the cost is installing and removing it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import greenlet


class Yielded(AssertionError):
    """A stretch that promised not to yield let another greenlet run."""


@contextmanager
def not_yielding(what: str) -> Iterator[None]:
    """Run the block; raise Yielded (naming `what`) if it switched to another greenlet."""
    switches: list[str] = []

    def trace(event: str, args: tuple) -> None:
        switches.append(event)
        if previous is not None:
            previous(event, args)

    previous = greenlet.settrace(trace)
    try:
        yield
    finally:
        greenlet.settrace(previous)
    if switches:
        raise Yielded(f"{what}: another greenlet ran in a stretch that must not yield")
