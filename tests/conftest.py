"""Fixtures: a real PostgreSQL database, real gunicorn servers and real WebSocket clients.

Only fixtures live here; the helpers behind them are in tests/support.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import Client
from tests.support.cluster import start_cluster
from tests.support.databases import create_database, drop_database, find_admin_url
from tests.support.identities import make_token, new_user_id
from tests.support.project import ROOT
from tests.support.restartable import EmbeddedPostgres, PrivateRedis
from tests.support.servers import Server

if not (ROOT / ".venv" / "bin" / "gunicorn").exists():  # pragma: no cover
    sys.exit("run `make install` first")


# --- databases ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def admin_url() -> str:
    return find_admin_url()


@pytest.fixture(scope="session")
def database_url(admin_url: str) -> Iterator[str]:
    name = f"chat_test_{uuid.uuid4().hex[:10]}"
    url = create_database(admin_url, name)
    yield url
    drop_database(admin_url, name)


@pytest.fixture(scope="session")
def fresh_database(admin_url: str) -> Iterator:
    """fresh_database() -> the URL of a new database with the schema (dropped at the end)."""
    names: list[str] = []

    def _create() -> str:
        names.append(f"chat_test_{uuid.uuid4().hex[:10]}")
        return create_database(admin_url, names[-1])

    yield _create
    for name in names:
        drop_database(admin_url, name)


# --- a server and its clients --------------------------------------------------------------------


@pytest.fixture(scope="session")
def server(database_url: str) -> Iterator[Server]:
    srv = Server(database_url, AUTH_TIMEOUT_SECONDS="1.5").start()
    yield srv
    srv.stop()


@pytest.fixture
def connect(server: Server):
    """connect(user_id=None, username=None, ...) -> an authenticated Client (welcome read)."""
    opened: list[Client] = []

    def _connect(user_id: int | None = None, username: str | None = None, srv: Server | None = None, **kw) -> Client:
        user_id = user_id or new_user_id()
        username = username or f"user{user_id}"
        client = Client.connect((srv or server).url, make_token(user_id, username), **kw)
        welcome = client.expect("welcome")
        assert welcome["data"]["userId"] == user_id
        client.user_id, client.username = user_id, username
        opened.append(client)
        return client

    yield _connect
    for client in opened:
        client.close()


@pytest.fixture(scope="module", params=["postgres", "redis"])
def cluster(request, fresh_database) -> Iterator[list[Server]]:
    """Two instances of two workers each, on each bus in turn (a private Redis for its own)."""
    # A database of its own: nodes on another bus must not bury this cluster's nodes.
    database_url = fresh_database()
    env = {"CHAT_BUS": request.param}
    redis = None
    if request.param == "redis":
        redis = PrivateRedis().start()
        env["REDIS_URL"] = redis.url
    servers = start_cluster(database_url, **env)
    yield servers
    for srv in servers:
        srv.stop()
    if redis:
        redis.stop()


# --- database servers that tests may stop and start ------------------------------------------------


@pytest.fixture
def embedded_postgres(tmp_path_factory) -> Iterator[EmbeddedPostgres]:
    # A short path: the server's Unix socket lives in this folder.
    path = Path("/tmp") / f"chat-pg-{uuid.uuid4().hex[:8]}"
    pg = EmbeddedPostgres(path)
    yield pg
    try:
        pg.stop()
    except subprocess.CalledProcessError:
        pass
    subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    redis = PrivateRedis().start()
    yield redis
    redis.stop()
