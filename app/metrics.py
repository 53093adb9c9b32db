"""Prometheus metrics of one server process (served at /metrics).

What is bumped once per frame, message or database round trip is kept in plain Python
numbers (`Tally`, `QuickHistogram`) and read at scrape time: prometheus_client's metrics
take a lock on every `inc` and `observe`, which under gevent is a lock object of Python
code; two observations per group commit cost the worker some 15,000 instructions each
(bench/callgrind.py). These are bumped by one thread's greenlets only, which never run at
the same time, so they need no lock.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString


class Tally:
    """A counter for hot paths: `tally.value += n`, exported as a Prometheus counter.

    Tallies of one name with different `labels` are the series of one counter.
    """

    def __init__(self, name: str, documentation: str, labels: dict[str, str] | None = None) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = labels or {}
        self.value = 0


class QuickHistogram:
    """A histogram for hot paths: `observe` is a bisection and two additions, exported as
    a Prometheus histogram."""

    __slots__ = ("name", "documentation", "bounds", "counts", "sum")

    def __init__(self, name: str, documentation: str, buckets: Iterable[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(float(bound) for bound in buckets)
        # counts[i]: observations in (bounds[i-1], bounds[i]]; the last, those above every bound
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class _QuickCollector:
    """Exports tallies and quick histograms when /metrics is read."""

    def __init__(self, *metrics: Tally | QuickHistogram) -> None:
        self.metrics = metrics

    def collect(self):
        counters: dict[str, CounterMetricFamily] = {}
        for metric in self.metrics:
            if isinstance(metric, QuickHistogram):
                yield _histogram_family(metric)
                continue
            family = counters.get(metric.name)
            if family is None:
                family = counters[metric.name] = CounterMetricFamily(
                    metric.name, metric.documentation, labels=list(metric.labels)
                )
            family.add_metric(list(metric.labels.values()), metric.value)
        yield from counters.values()


def _histogram_family(histogram: QuickHistogram) -> HistogramMetricFamily:
    counts = list(histogram.counts)  # (a copy: observations may come while this is built)
    cumulative, buckets = 0, []
    for bound, count in zip((*histogram.bounds, float("inf")), counts, strict=True):
        cumulative += count
        buckets.append((floatToGoString(bound), cumulative))
    return HistogramMetricFamily(histogram.name, histogram.documentation, buckets=buckets, sum_value=histogram.sum)


FRAMES_IN = Tally("chat_frames_in", "Frames received from clients")
FRAMES_OUT = Tally("chat_frames_out", "Frames sent or queued for clients")
STORED_ROOM_MESSAGES = Tally("chat_messages_stored", "Messages committed to PostgreSQL", {"kind": "room"})
STORED_DMS = Tally("chat_messages_stored", "Messages committed to PostgreSQL", {"kind": "dm"})
DB_SECONDS = QuickHistogram(
    "chat_db_transaction_seconds",
    "Time spent in one database transaction",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
BATCH_SIZE = QuickHistogram(
    "chat_commit_batch_messages",
    "Messages stored per group commit",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
REGISTRY.register(_QuickCollector(FRAMES_IN, FRAMES_OUT, STORED_ROOM_MESSAGES, STORED_DMS, DB_SECONDS, BATCH_SIZE))

CONNECTIONS = Gauge("chat_connections", "Open WebSocket connections (authenticated or not)")
ERRORS = Counter("chat_errors_total", "Error frames sent, by code", ["code"])
AUTH_REFUSED = Counter("chat_auth_refused_total", "Connections refused for authentication")
SLOW_CLIENTS = Counter("chat_slow_clients_total", "Connections closed because they read too slowly")
BUS_RECONNECTS = Counter("chat_bus_reconnects_total", "Times the fan-out listener reconnected")
FOREIGN_PAYLOADS = Counter(
    "chat_bus_foreign_payloads_total", "Bus payloads of another deployment, dropped (a misconfigured shared channel)"
)
GAP_FILLS = Counter("chat_gap_fills_total", "Times missing messages were fetched from the database")
GAP_FILL_DEFERRALS = Counter(
    "chat_gap_fill_deferrals_total", "Times a gap fill waited for the bus listener to catch up instead of fetching"
)
