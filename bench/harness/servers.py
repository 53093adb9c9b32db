"""The servers under test: their table, starting (pinned, CPU-capped) and stopping one, and the run's cleanup."""

import os
import signal
import socket
import subprocess
import time

from . import settings
from .log import log
from .paths import BENCH, ROOT
from .pg import db_url, drop_db
from .procs import process_tree, tree_stats


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_python():
    for p in (os.path.join(BENCH, ".venv", "bin"), os.path.join(ROOT, ".venv", "bin")):
        if os.path.exists(os.path.join(p, "gunicorn")):
            return p
    raise RuntimeError("no venv with gunicorn: run `make -C bench setup`")


def gunicorn_cmd(bin_dir, port, app):
    """gunicorn of `bin_dir` serving `app` with the server's own gunicorn.conf.py, on `port`, WORKERS workers."""
    return [
        os.path.join(bin_dir, "gunicorn"),
        "-c",
        "gunicorn.conf.py",
        "-b",
        f"127.0.0.1:{port}",
        "-w",
        settings.WORKERS,
        app,
    ]


SERVERS = {
    "project": {
        "label": "project (app/, gunicorn -w 1)",
        "cwd": ROOT,
        "cmd": lambda port: gunicorn_cmd(os.path.join(ROOT, ".venv", "bin"), port, "wsgi:app"),
        "schema": os.path.join(ROOT, "schema.sql"),
        "welcome": True,
        "available": lambda: (
            os.path.exists(os.path.join(ROOT, "wsgi.py")) and os.path.exists(os.path.join(ROOT, "schema.sql"))
        ),
    },
    "flask_plain": {
        "label": "plain Flask+flask-sock+gevent",
        "cwd": os.path.join(BENCH, "reference", "flask_plain"),
        "cmd": lambda port: gunicorn_cmd(bench_python(), port, "app:app"),
        "schema": os.path.join(BENCH, "schema_reference.sql"),
        "welcome": False,
        "available": lambda: True,
    },
    "node": {
        "label": "Node ws + pg",
        "cwd": os.path.join(BENCH, "reference", "node"),
        "cmd": lambda port: ["node", "server.js"],
        "schema": os.path.join(BENCH, "schema_reference.sql"),
        "welcome": False,
        "available": lambda: True,
    },
}


# Throttling period of --worker-cpu-share: short, so that a capped process waits at most
# 10 ms x (1 - share) for its next slice (the default 100 ms period would stall a worker
# for up to 65 ms at a 0.35 share, which the p99 limit of 100 ms would mostly measure).
CPU_PERIOD_US = 10_000


def cap_cpu(pid, share, name):
    """Let process `pid` (all its threads) use at most `share` of one core, through a CPU
    cgroup of its own (cgroup v1 `cpu` controller, or v2 `cpu.max`). This stands in for a
    machine with a core per worker: two workers capped at 0.35 each compete for 0.7 of a
    core the way they would for two cores, while the rest stays free for PostgreSQL and
    the load generator."""
    quota = max(1000, int(CPU_PERIOD_US * share))
    v1 = "/sys/fs/cgroup/cpu"
    if os.path.exists(os.path.join(v1, "cpu.cfs_quota_us")):
        path = os.path.join(v1, name)
        os.makedirs(path, exist_ok=True)
        settings.CGROUPS.append(path)
        for key, value in (("cpu.cfs_period_us", CPU_PERIOD_US), ("cpu.cfs_quota_us", quota), ("cgroup.procs", pid)):
            with open(os.path.join(path, key), "w") as f:
                f.write(str(value))
    elif os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        path = os.path.join("/sys/fs/cgroup", name)
        os.makedirs(path, exist_ok=True)
        settings.CGROUPS.append(path)
        with open(os.path.join(path, "cpu.max"), "w") as f:
            f.write(f"{quota} {CPU_PERIOD_US}")
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(pid))
    else:
        raise RuntimeError("--worker-cpu-share needs a writable CPU cgroup (/sys/fs/cgroup)")


def remove_cgroups():
    for path in settings.CGROUPS:
        try:
            os.rmdir(path)  # empty once its processes have exited
        except OSError as e:
            log(f"cgroup {path} not removed: {e}")
    settings.CGROUPS.clear()


class Server:
    def __init__(self, key, db, secret, extra_env, logdir, tag):
        self.key, self.spec = key, SERVERS[key]
        self.port = free_port()
        env = dict(os.environ)
        env.update(
            {
                "DATABASE_URL": db_url(db),
                "JWT_SECRET": secret,
                "WS_BIND_ADDR": f"127.0.0.1:{self.port}",
                "WEB_CONCURRENCY": settings.WORKERS,
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra_env)
        self.logpath = os.path.join(logdir, f"{key}-{tag}.log")
        self.logf = open(self.logpath, "w")
        cmd = ["taskset", "-c", settings.SERVER_CORE] + self.spec["cmd"](self.port)
        log(f"start {key} on 127.0.0.1:{self.port} ({' '.join(cmd[3:])}); log {os.path.relpath(self.logpath, ROOT)}")
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.spec["cwd"],
            env=env,
            stdout=self.logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        settings.RUNNING.append(self)
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self._wait_ready()
        if settings.WORKER_CPU_SHARE:
            self._cap_workers()

    def worker_pids(self):
        """The processes that serve connections: gunicorn's workers (not its master), or node."""
        tree = process_tree(self.proc.pid)
        return tree if self.key == "node" else [p for p in tree if p != self.proc.pid]

    def _cap_workers(self):
        for i, pid in enumerate(self.worker_pids()):
            cap_cpu(pid, settings.WORKER_CPU_SHARE, f"chatbench-{os.getpid()}-{self.port}-{i}")
        log(f"  each of {len(self.worker_pids())} server process(es) capped at {settings.WORKER_CPU_SHARE:g} of a core")

    def _wait_ready(self, timeout=30):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.key} exited with {self.proc.returncode}; see {self.logpath}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                # for gunicorn the master listens before the workers have booted: wait for them
                if self.key != "node":
                    if len(process_tree(self.proc.pid)) < 1 + int(settings.WORKERS):
                        time.sleep(0.2)
                        continue
                time.sleep(1.0)  # let the worker finish importing
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.key} did not listen within {timeout}s; see {self.logpath}")

    def alive(self):
        return self.proc.poll() is None

    def stats(self):
        return tree_stats(self.proc.pid)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        if self in settings.RUNNING:
            settings.RUNNING.remove(self)
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
        self.logf.close()


def cleanup():
    for s in list(settings.RUNNING):
        try:
            s.stop()
        except Exception as e:  # noqa: BLE001
            log(f"cleanup: {e}")
    for p in settings.LOADGENS:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    remove_cgroups()
    if not settings.KEEP_DBS:
        for d in list(settings.CREATED_DBS):
            drop_db(d)
