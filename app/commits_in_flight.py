"""This process's commits on their way, per channel, for a gap fill to wait for.

A commit is visible to other transactions before its own delivery runs (the batcher's
greenlet has yet to be scheduled). A gap fill that reads the new row meanwhile would
release it without knowing its sending connection, which must get `dm_sent` instead of
`dm`; it waits for the commits under way when it read, then finds them delivered.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from gevent.event import Event

from .messages import ChannelKey


@dataclass
class _Channel:
    started: int = 0
    finished: int = 0
    progress: Event = field(default_factory=Event)  # set, and replaced, at each end


class CommitsInFlight:
    """Counts commits begun and delivered per channel (the batcher tells it both)."""

    def __init__(self) -> None:
        self._channels: dict[ChannelKey, _Channel] = {}

    def begin(self, channels: Iterable[ChannelKey]) -> None:
        """A commit storing messages of these channels is about to be sent."""
        for channel in channels:
            self._channels.setdefault(channel, _Channel()).started += 1

    def end(self, channels: Iterable[ChannelKey]) -> None:
        """That commit's messages are delivered (or it failed): each channel once."""
        for channel in channels:
            state = self._channels[channel]
            state.finished += 1
            state.progress.set()
            state.progress = Event()
            if state.finished == state.started:
                del self._channels[channel]

    def wait(self, channel: ChannelKey, timeout_seconds: float) -> bool:
        """Wait until the commits of `channel` begun by now have ended; False if one of
        them has not within the timeout. Later ones are not waited for: they cannot be
        what a read that is over already saw, and a busy channel would keep it waiting."""
        state = self._channels.get(channel)
        if state is None:
            return True
        awaited = state.started
        deadline = time.monotonic() + timeout_seconds
        while state.finished < awaited:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not state.progress.wait(remaining):
                return False
        return True
