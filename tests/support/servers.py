"""Real gunicorn servers of the app, each in its own process group on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.request

from tests.support.identities import SECRET
from tests.support.project import ROOT
from tests.support.waiting import wait_for


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
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
