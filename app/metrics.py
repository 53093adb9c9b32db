"""Prometheus metrics of one server process (served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Gauge("chat_connections", "Open WebSocket connections (authenticated or not)")
FRAMES_IN = Counter("chat_frames_in_total", "Frames received from clients")
FRAMES_OUT = Counter("chat_frames_out_total", "Frames queued for clients")
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
GAP_FILLS = Counter("chat_gap_fills_total", "Times missing messages were fetched from the database")
