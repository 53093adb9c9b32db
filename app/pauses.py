"""Measure what pauses the event loop: garbage collections, and the loop's lag as a whole.

Every greenlet of a worker shares one thread, so anything that holds it (a collection
over many objects, a long computation) delays every connection at once. Both show in
/metrics, and the long ones in the log with their time, to line up with latency spikes.
"""

from __future__ import annotations

import gc
import logging
import sys
import time

import gevent
from prometheus_client import Histogram

log = logging.getLogger(__name__)

PAUSE_BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# A pause this long is felt by every user of the worker: worth a line in the log.
LONG_PAUSE_SECONDS = 0.05
# How often the lag probe wakes: often enough to catch most pauses that matter,
# rarely enough to cost nothing (20 wake-ups per second).
LAG_PROBE_INTERVAL_SECONDS = 0.05
# An overloaded worker lags on every wake-up: one log line per second says so well enough.
LAG_LOG_EVERY_SECONDS = 1.0

GC_PAUSES = Histogram(
    "chat_gc_pause_seconds", "Garbage collections, by generation", ["generation"], buckets=PAUSE_BUCKETS_SECONDS
)
LOOP_LAG = Histogram(
    "chat_event_loop_lag_seconds",
    "How late the event loop woke a sleeping greenlet",
    buckets=PAUSE_BUCKETS_SECONDS,
)

_collection_started: list[float] = []


def _on_collection(phase: str, info: dict) -> None:
    if phase == "start":
        _collection_started[:] = [time.perf_counter()]
        return
    if not _collection_started:
        return
    seconds = time.perf_counter() - _collection_started.pop()
    generation = info.get("generation", -1)
    GC_PAUSES.labels(str(generation)).observe(seconds)
    # (not while the interpreter shuts down: logging needs what is being torn down)
    if seconds >= LONG_PAUSE_SECONDS and not sys.is_finalizing():
        log.warning(
            "garbage collection of generation %s took %.0f ms (%s collected)",
            generation,
            seconds * 1000,
            info.get("collected"),
        )


def watch_garbage_collector() -> None:
    """Time every collection of this process (once; calling again changes nothing)."""
    if _on_collection not in gc.callbacks:
        gc.callbacks.append(_on_collection)


def watch_event_loop(interval_seconds: float = LAG_PROBE_INTERVAL_SECONDS) -> gevent.Greenlet:
    """Start a greenlet that sleeps `interval_seconds` at a time and records how late it wakes."""

    def probe() -> None:
        logged_at = -LAG_LOG_EVERY_SECONDS
        unlogged = 0  # long pauses since the last line
        while True:
            asleep_at = time.perf_counter()
            gevent.sleep(interval_seconds)
            woke_at = time.perf_counter()
            lag = woke_at - asleep_at - interval_seconds
            LOOP_LAG.observe(max(lag, 0.0))
            if lag < LONG_PAUSE_SECONDS:
                continue
            if woke_at - logged_at < LAG_LOG_EVERY_SECONDS:
                unlogged += 1
                continue
            more = f" ({unlogged} more since the last report)" if unlogged else ""
            log.warning("the event loop was held for %.0f ms%s", lag * 1000, more)
            logged_at, unlogged = woke_at, 0

    return gevent.spawn(probe)
