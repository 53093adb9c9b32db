"""Scale-out: server instances ("hosts") of two workers each, sharing one PostgreSQL and a bus."""

from __future__ import annotations

from tests.support.servers import Server

# Heartbeats every half second, a node taken for dead after 3 s without one, and a gap in
# a room's order filled from the database after 0.2 s: a node's loss, and a message lost
# on the bus, play out within a test's seconds.
CLUSTER_ENV = {"HEARTBEAT_SECONDS": "0.5", "NODE_TIMEOUT_SECONDS": "3", "GAP_WAIT_SECONDS": "0.2"}


def start_cluster(database_url: str, **env: str) -> list[Server]:
    """Two instances of two workers each on `database_url`, with CLUSTER_ENV and `env`."""
    return [Server(database_url, workers=2, **CLUSTER_ENV, **env).start() for _ in range(2)]
