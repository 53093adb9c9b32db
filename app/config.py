"""Configuration defaults and the environment variables that override them.

Every key of DEFAULTS can be set by an environment variable of the same name (or in a
`.env` file in the working directory); values are coerced to the default's type.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent

DEFAULTS: dict[str, Any] = {
    # Where the data lives. Without DATABASE_URL, `make run` starts an embedded server.
    "DATABASE_URL": "",
    # Shared HS256 secret with the backend that issues tokens.
    "JWT_SECRET": "",
    # When set, tokens must carry this `aud` claim; when empty, `aud` is not checked.
    "JWT_AUDIENCE": "",
    # Clock skew allowed between the token issuer and this server on `iat` and `nbf`, so
    # that the fresh tokens of an issuer whose clock runs a little ahead are taken. Not on
    # `exp` (app/tokens.py): an open connection is closed with 4001 at `exp`.
    "JWT_LEEWAY_SECONDS": 5,
    # Cross-process fan-out: "postgres" (LISTEN/NOTIFY), "redis", or "auto" (redis when
    # REDIS_URL is set, else postgres).
    "CHAT_BUS": "auto",
    "REDIS_URL": "",
    # The Redis channel of this deployment; empty: "chat_events:<the database's deployment
    # id>" (schema.sql), so that deployments sharing one Redis never hear each other
    # (Redis pub/sub ignores REDIS_URL's database number). PostgreSQL's bus is per database.
    "BUS_CHANNEL": "",
    "ROOMS_AUTO_CREATE": True,
    # Rooms one user may create a minute, over all their connections, workers and hosts
    # (counted in the database); 0: no limit. A join that would create one more gets
    # `rate_limited`: one token must not fill the database with rooms from many
    # connections at once. As many as one connection's frame rate allows (10 a second,
    # PROTOCOL.md §4), so that no client working quickly on one connection (a test suite
    # making a room per test under one user) meets it; lower it where users are strangers.
    "ROOMS_CREATE_PER_MINUTE": 600,
    "LOG_LEVEL": "INFO",
    # Limits of PROTOCOL.md §4.
    "MAX_CONTENT_CHARS": 4000,
    "MAX_FRAME_BYTES": 64 * 1024,
    "RATE_BURST_FRAMES": 30,
    "RATE_FRAMES_PER_SECOND": 10.0,
    "HISTORY_DEFAULT_LIMIT": 50,
    "HISTORY_MAX_LIMIT": 200,
    # join_ack lists at most this many online users (and counts them all in `online`).
    "JOIN_ACK_MAX_USERS": 1000,
    # `rooms` lists at most this many rooms, the most crowded (anyone may create rooms:
    # hundreds of thousands would make an answer no client could take).
    "ROOMS_LIST_MAX": 1000,
    # Joins and leaves are announced (presence) only in rooms with at most this many
    # users online: a crowd of N joining would otherwise cost N² presence frames.
    "PRESENCE_MAX_ROOM_SIZE": 500,
    # Frames a replay (`join` with `since`) reads from the database per query.
    "REPLAY_PAGE_SIZE": 500,
    # Event frames (edits, deletes, reactions) one DM catch-up answer (`dm_history` with
    # `after`) carries at most; past it the answer says `more` and the client asks again.
    "DM_CATCH_UP_EVENTS": 500,
    # An idle connection is pinged this often; one that sends nothing back within
    # PONG_TIMEOUT_SECONDS after a ping is dropped, and so is one that takes none of what
    # waits for it for as long, whatever it sends.
    "PING_INTERVAL_SECONDS": 25.0,
    "PONG_TIMEOUT_SECONDS": 20.0,
    # How long an unauthenticated connection may wait before its `auth` frame.
    "AUTH_TIMEOUT_SECONDS": 10.0,
    # Frames, and bytes, queued for one client before it counts as too slow and is closed
    # with 1008. The bytes bound what a client that asks for history and never reads can
    # hold (an answer of 200 long messages is ~3 MB); a replay page of 500 of the longest
    # messages (8 MB) still fits.
    "OUTBOX_MAX_FRAMES": 2000,
    "OUTBOX_MAX_BYTES": 16 * 1024 * 1024,
    # Bytes queued for all clients of a process together, past which a client with more
    # than transport.OUTBOX_SHARE_BYTES queued is closed with 1008 too: many connections
    # that never read could otherwise each hold OUTBOX_MAX_BYTES.
    "OUTBOX_TOTAL_MAX_BYTES": 256 * 1024 * 1024,
    # Kernel send buffer per client socket: bounds the memory a client that stops reading
    # can hold (the kernel would let it grow to megabytes) before its outbox overflows.
    "SOCKET_SEND_BUFFER_BYTES": 256 * 1024,
    # How long a slow client gets to take its close frame before the socket is cut.
    "CLOSE_TIMEOUT_SECONDS": 5.0,
    # Database pool: connections per worker process, and how long to wait for one. A crowd
    # connecting holds them one round trip at a time, but each waits for the busy event
    # loop to come round, so more than a few help (bench: 16 beat 8; 32 gained nothing). Each
    # worker also holds COMMIT_PIPELINES + 1 more (group commit, bus listener): mind
    # PostgreSQL's max_connections (100 by default) when adding workers.
    "DB_POOL_SIZE": 16,
    "DB_CONNECT_TIMEOUT_SECONDS": 3,
    "DB_ACQUIRE_TIMEOUT_SECONDS": 5.0,
    # Longest a statement on a pool connection may run, waiting for locks included; then
    # the request gets `unavailable` and the connection goes back to the pool. Without it,
    # a lock held by a stuck transaction (another backend sharing the database, a node
    # frozen mid-join) would keep each request behind it, its pool connection, and a
    # batch's other requests waiting for as long as that transaction lives. Every pool
    # statement is an index lookup or a batch of them (milliseconds); schema loading and
    # the group commit's lanes (STORE_TIMEOUT_SECONDS) are not on the pool. 0: no limit.
    "DB_STATEMENT_TIMEOUT_SECONDS": 10.0,
    # Group commit: at most this many messages share one transaction.
    "BATCH_MAX_MESSAGES": 256,
    # Group commits in flight at once (each on a connection of its own).
    "COMMIT_PIPELINES": 2,
    # How long a send may wait for its commit before the client gets `unavailable`.
    "STORE_TIMEOUT_SECONDS": 10.0,
    # Cluster membership: a process that has not refreshed its heartbeat for
    # NODE_TIMEOUT_SECONDS is dead and its presence entries are removed.
    "HEARTBEAT_SECONDS": 3.0,
    "NODE_TIMEOUT_SECONDS": 10.0,
    # How long a message may wait for an earlier one of the same room before the
    # gap is filled from the database.
    "GAP_WAIT_SECONDS": 0.5,
    # Standalone sign-in (POST /api/login); switch off where another backend issues tokens.
    "LOGIN_ENABLED": True,
    # Largest HTTP request body (Flask's own setting; a sign-in needs well under 1 KB).
    "MAX_CONTENT_LENGTH": 16 * 1024,
    # Reverse proxies in front of the server whose X-Forwarded-For is trusted: with 1, the
    # client address (sign-in rate limits, logs) is the one the proxy saw, not the proxy's.
    "TRUSTED_PROXIES": 0,
    "TOKEN_TTL_SECONDS": 12 * 3600,
    # Built React page served at GET /.
    "WEB_DIST": str(PROJECT_ROOT / "web" / "app" / "dist"),
}


def _coerce(raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


def from_environment(environ: os._Environ[str] | dict[str, str] | None = None) -> dict[str, Any]:
    """Return the keys of DEFAULTS that the environment sets, with the default's type."""
    environ = os.environ if environ is None else environ
    found: dict[str, Any] = {}
    for key, default in DEFAULTS.items():
        if key in environ and environ[key] != "":
            found[key] = _coerce(environ[key], default)
    return found


def load_dotenv_file() -> None:
    """Read `.env` from the working directory without overriding the real environment."""
    from dotenv import load_dotenv

    load_dotenv(Path.cwd() / ".env", override=False)
