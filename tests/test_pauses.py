"""The pause probes: garbage collections and event-loop lag are measured, the long ones logged."""

from __future__ import annotations

import gc
import logging
import time
import urllib.request

import gevent
from prometheus_client import REGISTRY

from app import pauses
from tests.support.waiting import wait_for


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_every_collection_is_timed_by_generation():
    pauses.watch_garbage_collector()
    pauses.watch_garbage_collector()  # a second call adds no second callback
    try:
        assert gc.callbacks.count(pauses._on_collection) == 1
        before = sample("chat_gc_pause_seconds_count", generation="2")
        gc.collect()
        assert sample("chat_gc_pause_seconds_count", generation="2") == before + 1
    finally:
        gc.callbacks.remove(pauses._on_collection)


def test_a_held_event_loop_is_measured_and_logged(caplog):
    caplog.set_level(logging.WARNING, logger="app.pauses")
    probe = pauses.watch_event_loop(interval_seconds=0.01)
    try:
        gevent.sleep(0.05)  # the probe is running
        long_before = sample("chat_event_loop_lag_seconds_count") - sample(
            "chat_event_loop_lag_seconds_bucket", le="0.05"
        )
        for _ in range(2):
            time.sleep(0.15)  # not gevent's sleep: this holds the loop, no greenlet runs
            gevent.sleep(0.05)
    finally:
        probe.kill()
    long_after = sample("chat_event_loop_lag_seconds_count") - sample("chat_event_loop_lag_seconds_bucket", le="0.05")
    assert long_after == long_before + 2
    # both measured, one logged: an overloaded worker writes a line a second, not twenty
    assert caplog.text.count("the event loop was held for") == 1


def test_the_server_exports_its_pauses(server, connect):
    connect()  # the first connection starts the chat runtime, and with it the probe

    def exported() -> bool:
        with urllib.request.urlopen(server.http + "/metrics", timeout=5) as response:
            body = response.read().decode()
        counts = [line for line in body.splitlines() if line.startswith("chat_event_loop_lag_seconds_count ")]
        return bool(counts) and float(counts[0].split()[1]) > 0

    wait_for(exported, 5, "the lag probe's samples in /metrics")
