"""Settings for an app.connection.Connection driven in the test's own process over a socket pair."""

from __future__ import annotations

CONNECTION_CONFIG = {
    "SOCKET_SEND_BUFFER_BYTES": 0,
    "MAX_FRAME_BYTES": 65536,
    "RATE_BURST_FRAMES": 30,
    "RATE_FRAMES_PER_SECOND": 10.0,
    "OUTBOX_MAX_FRAMES": 2000,
    "OUTBOX_MAX_BYTES": 16 * 1024 * 1024,
    "OUTBOX_TOTAL_MAX_BYTES": 256 * 1024 * 1024,
    "CLOSE_TIMEOUT_SECONDS": 5.0,
}
