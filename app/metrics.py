"""Prometheus metrics of one server process (served at /metrics).

Counters bumped once per frame sent or received are plain integers (`Tally`) read at
scrape time: prometheus_client's Counter takes a lock on every `inc`, too dear on the
fan-out path.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily


class Tally:
    """A counter for hot paths: `tally.value += n`, exported as a Prometheus counter."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self.value = 0


class _TallyCollector:
    def __init__(self, *tallies: Tally) -> None:
        self.tallies = tallies

    def collect(self):
        for tally in self.tallies:
            family = CounterMetricFamily(tally.name, tally.documentation)
            family.add_metric([], tally.value)
            yield family


FRAMES_IN = Tally("chat_frames_in", "Frames received from clients")
FRAMES_OUT = Tally("chat_frames_out", "Frames sent or queued for clients")
REGISTRY.register(_TallyCollector(FRAMES_IN, FRAMES_OUT))

CONNECTIONS = Gauge("chat_connections", "Open WebSocket connections (authenticated or not)")
MESSAGES_STORED = Counter("chat_messages_stored_total", "Messages committed to PostgreSQL", ["kind"])
ERRORS = Counter("chat_errors_total", "Error frames sent, by code", ["code"])
AUTH_REFUSED = Counter("chat_auth_refused_total", "Connections refused for authentication")
SLOW_CLIENTS = Counter("chat_slow_clients_total", "Connections closed because they read too slowly")
DB_SECONDS = Histogram(
    "chat_db_transaction_seconds",
    "Time spent in one database transaction",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
BATCH_SIZE = Histogram(
    "chat_commit_batch_messages",
    "Messages stored per group commit",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
BUS_RECONNECTS = Counter("chat_bus_reconnects_total", "Times the fan-out listener reconnected")
FOREIGN_PAYLOADS = Counter(
    "chat_bus_foreign_payloads_total", "Bus payloads of another deployment, dropped (a misconfigured shared channel)"
)
GAP_FILLS = Counter("chat_gap_fills_total", "Times missing messages were fetched from the database")
GAP_FILL_DEFERRALS = Counter(
    "chat_gap_fill_deferrals_total", "Times a gap fill waited for the bus listener to catch up instead of fetching"
)
