"""Private database servers a test may stop and start: an embedded PostgreSQL and a redis-server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import psycopg2

from app import schema
from tests.support.servers import free_port
from tests.support.waiting import wait_for


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
        # As the server does at its start: only what is missing, so a restart under a running
        # server (which reconnects and prepares meanwhile) takes no lock of schema.sql's ALTERs,
        # which once deadlocked with it.
        schema.load_schema(chat_url, only_if_missing=True)
        return chat_url

    def stop(self) -> None:
        user = "pgserver" if os.geteuid() == 0 else None
        self._python(
            "import pathlib\nfrom pgserver._commands import pg_ctl\n"
            f"pg_ctl(['-w', '-m', 'fast', 'stop'], pgdata=pathlib.Path({str(self.path)!r}), user={user!r})"
        )


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
