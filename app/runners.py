"""Short jobs run in greenlets that are kept and used again, instead of one spawned each.

Every reading turn of a connection (Transport._pump) runs in a greenlet of its own, since
a handler may wait (for its message's commit, say): a turn per message a client sends. A
greenlet spawned for each costs about 10 us: the Greenlet object, and a 16 KB frame stack
that CPython 3.11 maps for it with mmap and unmaps when it ends. A runner here is parked
in the event loop between jobs: a job costs about 2 us. Runners beyond IDLE_RUNNERS_MAX
end when their job does, so that a burst (a reconnect storm, thousands waiting on the
database at once) does not keep its greenlets for good.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import greenlet
from gevent import get_hub

log = logging.getLogger(__name__)

# Idle runners kept per event loop: more than the jobs waiting at once at a steady
# load (about the messages of one commit's time), each holding some 20 KB.
IDLE_RUNNERS_MAX = 64


class Runners:
    """The runners of one event loop (hub)."""

    def __init__(self, hub: Any, idle_max: int = IDLE_RUNNERS_MAX) -> None:
        self.hub = hub
        self.idle_max = idle_max
        self.idle: list[greenlet.greenlet] = []

    def run_soon(self, job: Callable[..., None], *args: Any) -> None:
        """Run `job(*args)` in a runner once the event loop comes round, as gevent.spawn would."""
        runner = self.idle.pop() if self.idle else greenlet.greenlet(self._serve, parent=self.hub)
        self.hub.loop.run_callback(runner.switch, job, args)

    def _serve(self, job: Callable[..., None], args: tuple) -> None:
        idle = self.idle
        while True:
            try:
                job(*args)
            except greenlet.GreenletExit:
                raise
            except BaseException:  # a runner's exception would be raised in the event loop
                log.exception("a job in a runner failed: %r", job)
            job = args = None  # nothing of the job kept while parked
            if len(idle) >= self.idle_max:
                return
            me = greenlet.getcurrent()
            idle.append(me)
            try:
                job, args = self.hub.switch()  # parked until run_soon hands it the next job
            except BaseException as exc:  # woken by something else (a job's stray timeout): retire
                if me in idle:
                    idle.remove(me)  # a dead runner handed a job would drop it
                if isinstance(exc, greenlet.GreenletExit):
                    raise
                log.exception("a parked runner was woken by something other than a job")
                return


_runners: Runners | None = None


def run_soon(job: Callable[..., None], *args: Any) -> None:
    """Run `job(*args)` in a kept greenlet of this thread's event loop, soon."""
    global _runners
    hub = get_hub()
    if _runners is None or _runners.hub is not hub:  # (a new hub: after a fork, in tests)
        _runners = Runners(hub)
    _runners.run_soon(job, *args)
