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

import greenlet


class Yielded(AssertionError):
    """A stretch that promised not to yield let another greenlet run."""


def not_yielding(what: str) -> NotYielding:
    """`with` it: the block runs; Yielded (naming `what`) is raised after it if it switched
    to another greenlet."""
    return NotYielding(what)


class NotYielding:
    """The `with` block of not_yielding: a class, not a contextlib generator, as it wraps
    every join_ack (twenty a reconnect)."""

    __slots__ = ("what", "switched", "previous")

    def __init__(self, what: str) -> None:
        self.what = what
        self.switched = False
        self.previous = None

    def __enter__(self) -> None:
        self.previous = greenlet.settrace(self._trace)

    def _trace(self, event: str, args: tuple) -> None:
        self.switched = True
        if self.previous is not None:
            self.previous(event, args)

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        greenlet.settrace(self.previous)
        if self.switched and exc_type is None:
            raise Yielded(f"{self.what}: another greenlet ran in a stretch that must not yield")
