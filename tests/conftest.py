"""Fixtures: a real PostgreSQL database, real gunicorn servers and real WebSocket clients."""

from __future__ import annotations

import itertools
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import jwt
import psycopg2
import pytest
import websocket
from support.asyncapi import check_client_frame, check_server_frame

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret-that-is-long-enough-for-hs256"
_user_ids = itertools.count(random.randint(1_000_000, 9_000_000) * 10)


# --- waiting for events ------------------------------------------------------------------------


def wait_for(predicate, timeout: float, what: str, pause: float = 0.02):
    """Poll `predicate` until it returns something true (returned), or fail naming `what`.

    For events nothing announces (a process listening, a server noticing a dead peer);
    where a frame or a thread announces the event, wait for that instead.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(pause)


class FaultPhases:
    """Orders traffic around a fault by events, not timed sleeps.

    Every sender sends half its messages and waits; then the fault begins (`stop`), the
    senders send the rest into it, and the fault ends (`start`) once each sender has had
    an answer while it lasted. A sender refused during the fault waits for its end, then
    sends again with the same clientId.
    """

    def __init__(self, senders: int) -> None:
        self.senders = senders
        self.halfway = threading.Barrier(senders + 1)
        self.begun = threading.Event()
        self.over = threading.Event()
        self.answered_during: set[int] = set()

    def at_halfway(self) -> None:
        """Called by each sender half-way through: returns once the fault has begun."""
        self.halfway.wait(60)
        self.begun.wait(60)

    def answered(self, sender: int) -> None:
        if self.begun.is_set() and not self.over.is_set():
            self.answered_during.add(sender)

    def refused(self, sender: int) -> None:
        """A send was refused: wait for the end of the fault before sending again."""
        self.answered(sender)
        if self.begun.is_set():
            self.over.wait(60)

    def run(self, stop, start, during=lambda: None) -> None:
        """The fault: `stop` once every sender is half-way, `start` once each was answered."""
        self.halfway.wait(60)
        stop()
        during()
        self.begun.set()
        wait_for(lambda: len(self.answered_during) == self.senders, 60, "every sender answered during the fault")
        start()
        self.over.set()


# --- database ----------------------------------------------------------------------------------


def _admin_url() -> str:
    """A PostgreSQL to create test databases in: TEST_ADMIN_DATABASE_URL, the local one, or embedded."""
    candidates = [os.environ.get("TEST_ADMIN_DATABASE_URL")] + [
        f"postgresql://{user}@127.0.0.1:5432/postgres" for user in ("postgres", "root")
    ]
    for url in filter(None, candidates):
        try:
            psycopg2.connect(url, connect_timeout=2).close()
            return url
        except psycopg2.OperationalError:
            continue
    import pgserver

    return pgserver.get_server(ROOT / "var" / "test-pgdata", cleanup_mode="stop").get_uri()


def create_database(admin_url: str, name: str) -> str:
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    url = database_url_for(admin_url, name)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute((ROOT / "schema.sql").read_text())
    conn.close()
    return url


def drop_database(admin_url: str, name: str) -> None:
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def database_url_for(admin_url: str, name: str) -> str:
    base, _, query = admin_url.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + name
    return base + ("?" + query if query else "")


@pytest.fixture(scope="session")
def admin_url() -> str:
    return _admin_url()


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


def sql(url: str, query: str, params: tuple = ()) -> list[tuple]:
    """Run one query against the test database (what `psql` would show)."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            rows = cur.fetchall() if cur.description else []
        conn.commit()
        return rows
    finally:
        conn.close()


# --- tokens and users ----------------------------------------------------------------------------


def new_user_id() -> int:
    return next(_user_ids)


def make_token(user_id: int, username: str | None = None, secret: str = SECRET, **claims) -> str:
    payload: dict = {"user_id": user_id, "exp": int(time.time()) + 3600}
    if username:
        payload["username"] = username
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm="HS256")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- servers ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real gunicorn (gevent worker) serving the app, in its own process group."""

    def __init__(self, database_url: str, port: int | None = None, workers: int = 1, **env: str) -> None:
        self.database_url = database_url
        self.port = port or free_port()
        self.workers = workers
        self.env = {k: str(v) for k, v in env.items()}
        self.proc: subprocess.Popen | None = None
        self.log_path = ROOT / "var" / "test-logs" / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.database_url,
            JWT_SECRET=SECRET,
            WS_BIND_ADDR=f"127.0.0.1:{self.port}",
            WEB_CONCURRENCY=str(self.workers),
            LOG_LEVEL="info",
        )
        env.update(self.env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready() -> bool:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"server exited: see {self.log_path}")
            try:
                with urllib.request.urlopen(self.http + "/healthz", timeout=1) as resp:
                    return resp.status == 200
            except OSError:
                return False

        wait_for(ready, timeout, f"server on {self.port} ready (log: {self.log_path})")

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def stop(self, sig: int = 15, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def server(database_url: str) -> Iterator[Server]:
    srv = Server(database_url, AUTH_TIMEOUT_SECONDS="1.5").start()
    yield srv
    srv.stop()


# --- clients -----------------------------------------------------------------------------------------


class Client:
    """A WebSocket client that reads frames as dicts and waits for the ones it wants."""

    def __init__(self, ws: websocket.WebSocket) -> None:
        self.ws = ws
        self.seen: list[dict] = []  # frames read but not yet asked for

    @classmethod
    def connect(cls, base_url: str, token: str | None = None, how: str = "query", path: str = "/ws", **kw) -> Client:
        headers = []
        url = base_url + path
        if token and how == "query":
            url += f"?token={token}"
        elif token and how == "header":
            headers.append(f"Authorization: Bearer {token}")
        ws = websocket.create_connection(url, header=headers, timeout=10, **kw)
        client = cls(ws)
        if token and how == "frame":
            client.send({"type": "auth", "token": token})
        return client

    def send(self, frame: dict | str) -> None:
        """Send a frame: a dict must match docs/asyncapi.yaml; a str goes out unchecked (the
        way to send a frame meant to be refused, see tests/support/asyncapi.py)."""
        self.ws.send(frame if isinstance(frame, str) else json.dumps(check_client_frame(frame)))

    def recv_any(self, timeout: float = 10.0) -> dict:
        if self.seen:
            return self.seen.pop(0)
        self.ws.settimeout(timeout)
        return check_server_frame(json.loads(self.ws.recv()))

    def expect(self, kind: str, timeout: float = 10.0, **match) -> dict:
        """The first frame of this type (and matching fields); others are kept for later."""
        for index, frame in enumerate(self.seen):
            if frame.get("type") == kind and _matches(frame, match):
                return self.seen.pop(index)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {kind} {match} within {timeout}s; seen {self.seen[-5:]}")
            self.ws.settimeout(remaining)
            try:
                frame = check_server_frame(json.loads(self.ws.recv()))
            except websocket.WebSocketTimeoutException:
                continue
            if frame.get("type") == kind and _matches(frame, match):
                return frame
            self.seen.append(frame)

    def expect_error(self, code: str, timeout: float = 10.0) -> dict:
        frame = self.expect("error", timeout)
        assert frame["code"] == code, frame
        assert frame["data"]["message"] == frame["message"] and frame["data"]["code"] == code
        assert frame["message"]
        return frame

    def nothing_more(self, kind: str, wait: float = 0.5) -> None:
        """Assert no frame of this type arrives within `wait` seconds."""
        with pytest.raises(TimeoutError):
            self.expect(kind, timeout=wait)

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass


def _matches(frame: dict, match: dict) -> bool:
    for key, value in match.items():
        holder = frame if key in frame else frame.get("data") or {}
        if not isinstance(holder, dict) or holder.get(key) != value:
            return False
    return True


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


if not (ROOT / ".venv" / "bin" / "gunicorn").exists():  # pragma: no cover
    sys.exit("run `make install` first")


# --- an embedded PostgreSQL that tests may stop and start ---------------------------------------------


class EmbeddedPostgres:
    """A private PostgreSQL (the pgserver package) in a folder, for restart tests."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _python(self, code: str) -> str:
        return subprocess.run(
            [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True, timeout=60
        ).stdout.strip()

    def start(self) -> str:
        """Start (or find running) and return the URL of its `chat` database, schema loaded."""
        url = self._python(
            "import pgserver\n"
            f"s = pgserver.get_server({str(self.path)!r}, cleanup_mode=None)\n"
            "print(s.get_uri('postgres'))"
        ).splitlines()[-1]
        admin = psycopg2.connect(url)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = 'chat'")
            if not cur.fetchone():
                cur.execute("CREATE DATABASE chat")
        admin.close()
        chat_url = url.replace("/postgres?", "/chat?")
        with psycopg2.connect(chat_url) as conn, conn.cursor() as cur:
            cur.execute((ROOT / "schema.sql").read_text())
        conn.close()
        return chat_url

    def stop(self) -> None:
        user = "pgserver" if os.geteuid() == 0 else None
        self._python(
            "import pathlib\nfrom pgserver._commands import pg_ctl\n"
            f"pg_ctl(['-w', '-m', 'fast', 'stop'], pgdata=pathlib.Path({str(self.path)!r}), user={user!r})"
        )


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


# --- a private Redis that tests may stop and start ------------------------------------------------------


class PrivateRedis:
    """redis-server on a free port, without persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                return False

        wait_for(listening, 10, "redis-server listening")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    redis = PrivateRedis().start()
    yield redis
    redis.stop()


# --- a TCP proxy that can go silent -------------------------------------------------------------------


class StallingProxy:
    """Forwards TCP connections to a port until stall(): then its connections stay open and
    pass nothing either way, like a hung server or a proxy stuck in between, until resume().
    Or until cut(): then its connections are closed, and new ones too as soon as they come,
    like a network partition, until resume(). OS threads, so that it runs while the test's
    own code blocks."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.stalled = threading.Event()
        self.cut_off = threading.Event()
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        self.stalled.set()

    def cut(self) -> None:
        self.cut_off.set()

    def resume(self) -> None:
        """Pass again what waited meanwhile, and what comes next."""
        self.stalled.clear()
        self.cut_off.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.cut_off.is_set():
                client.close()
                continue
            self.accepted += 1
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        import select

        with client, upstream:
            while True:
                ready, _, _ = select.select([client, upstream], [], [], 0.05)
                if self.cut_off.is_set():
                    return
                if self.stalled.is_set():
                    continue
                for sock in ready:
                    data = sock.recv(65536)
                    if not data or self.cut_off.is_set():
                        return  # (what recv() read may have come after the cut)
                    (upstream if sock is client else client).sendall(data)

    def close(self) -> None:
        self.server.close()
