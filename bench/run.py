#!/usr/bin/env python3
"""Benchmark orchestrator: the project server against two reference servers.

    python3 bench/run.py                      # everything, full durations (~35-45 min)
    python3 bench/run.py --quick              # short steps, 1M history rows, 2,000 idle conns
    python3 bench/run.py --servers node,flask_plain --scenarios chat

For every selected server, in one run and under the same conditions: a fresh PostgreSQL
database (bench_<server>_<pid>), the server pinned to core 0 (`taskset -c 0`), the Node load
generator pinned to core 1 (`taskset -c 1`), a fresh server process for each scenario, server
RSS (summed over its process tree) and CPU seconds read from /proc. Scenarios:

  chat     stepped saturation search: rooms of 10 members, each member sends 2 msgs/s; the
           number of rooms grows until p99 > 100 ms or anything is lost / duplicated /
           reordered / refused; the last passing step is the result. With --loadgen-procs N
           each step's rooms are shared out (whole rooms) to N generator processes started
           at one instant, and their results merged into one (also for `fixed`).
  idle     N connections authenticated and joined to one room; server RSS; then one message
           fanned out to all N.
  history  10M messages seeded by SQL; room_history limit 50 (latest, paging with `before`,
           deep `before`) latency percentiles over WebSocket.

Only 127.0.0.1 is used. Everything is bounded in time; servers and databases are removed at
the end (also on Ctrl-C). Needs: psql, taskset, node + bench/node_modules (make -C bench setup),
bench/.venv for the Flask reference. Standard library only.
"""

import argparse
import atexit
import datetime
import json
import math
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from array import array

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
LOADGEN = os.path.join(BENCH, "loadgen", "loadgen.js")
PG = dict(host="127.0.0.1", port="5432", user="postgres")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

# the PostgreSQL cluster that serves 127.0.0.1:5432 here (Debian's postgresql-15, "15/main")
PG_BIN = "/usr/lib/postgresql/"
PG_CLUSTER = os.environ.get("BENCH_PG_CLUSTER", "15/main")

SERVER_CORE = "0"  # --server-cpus
LOADGEN_CORE = "1"  # --loadgen-cpus
LOADGEN_PROCS = 1  # --loadgen-procs: load generator processes sharing a chat step
WORKERS = "1"  # --workers: gunicorn workers of the Python servers
WORKER_CPU_SHARE = None  # --worker-cpu-share: each server process capped at this fraction of a core


def log(*a):
    print("[bench]", *a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ /proc sampling
def _children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        ppid = int(s[s.rindex(")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def process_tree(pid):
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def proc_cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return 0.0
    fields = s[s.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def proc_rss_kb(pid):
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE_KB
    except OSError:
        return 0


def proc_pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_stats(pid):
    pids = process_tree(pid)
    return {
        "rss_mb": sum(proc_rss_kb(p) for p in pids) / 1024,
        "pss_mb": sum(proc_pss_kb(p) for p in pids) / 1024,
        "cpu_s": sum(proc_cpu_s(p) for p in pids),
        "procs": len(pids),
    }


def machine_busy_s():
    """CPU seconds spent busy by the whole machine (all cores) since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def postgres_cpu(db):
    """{pid: cpu_s} of the PostgreSQL processes that work for database `db`: its backends and
    the server's own auxiliary processes (WAL writer, checkpointer, ...), not the backends of
    other databases."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
        except OSError:
            continue
        cmd = _cmdline(d)
        parts = cmd.split()
        if cmd.startswith(PG_BIN):  # the postmaster of the cluster on 127.0.0.1:5432
            out[int(d)] = proc_cpu_s(int(d))
        elif len(parts) >= 3 and parts[0] == "postgres:" and parts[1] == PG_CLUSTER + ":":
            # backends: "postgres: 15/main: <user> <db> <client>(<port>) <state>";
            # auxiliary processes: "postgres: 15/main: walwriter" and the like
            backend = len(parts) >= 5 and "(" in parts[4]
            if not backend or parts[3] == db:
                out[int(d)] = proc_cpu_s(int(d))
    return out


def postgres_cpu_since(before, after):
    """CPU seconds PostgreSQL spent between two postgres_cpu() readings (new backends count whole)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


class Sampler:
    """Samples the server tree's RSS every `interval` s in a thread (keeps the peak) and, over
    the whole window, the CPU time of the server, of the PostgreSQL processes serving `db` and
    of the whole machine; `finish(loadgen_cpu_s)` then tells how much CPU went to anything else
    (another user's tests, say), which would disturb the measurement."""

    def __init__(self, pid, db, interval=0.5):
        self.pid, self.db, self.interval = pid, db, interval
        self.peak_rss = 0.0
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.start = tree_stats(self.pid)
        self.pg0 = postgres_cpu(self.db)
        self.busy0 = machine_busy_s()
        self.t0 = time.monotonic()
        self.t.start()
        return self

    def _run(self):
        while not self.stop_ev.wait(self.interval):
            self.peak_rss = max(self.peak_rss, tree_stats(self.pid)["rss_mb"])

    def __exit__(self, *exc):
        self.stop_ev.set()
        self.t.join()
        end = tree_stats(self.pid)
        busy = machine_busy_s() - self.busy0
        pg1 = postgres_cpu(self.db)
        pg = postgres_cpu_since(self.pg0, pg1)
        self.result = {
            "wall_s": round(time.monotonic() - self.t0, 2),
            "server_cpu_s": round(end["cpu_s"] - self.start["cpu_s"], 2),
            "postgres_cpu_s": round(pg, 2),
            "machine_busy_s": round(busy, 2),
            "rss_mb_start": round(self.start["rss_mb"], 1),
            "rss_mb_end": round(end["rss_mb"], 1),
            "rss_mb_peak": round(max(self.peak_rss, end["rss_mb"]), 1),
            "pss_mb_end": round(end["pss_mb"], 1),
        }
        return False

    def finish(self, loadgen_cpu_s):
        r = self.result
        r["loadgen_cpu_s"] = round(loadgen_cpu_s or 0.0, 2)
        other = r["machine_busy_s"] - r["server_cpu_s"] - r["postgres_cpu_s"] - r["loadgen_cpu_s"]
        r["other_cpu_s"] = round(other, 2)
        r["other_cpu_pct"] = round(100 * other / max(r["wall_s"], 0.001), 1)
        return r


def wait_quiet(max_wait, limit_pct):
    """Wait (at most max_wait s) until the machine has been nearly idle for 2 s, so that the
    load of whoever else uses this machine does not land in a measurement. Returns busy %."""
    t0 = time.monotonic()
    n = 0
    while True:
        b0 = machine_busy_s()
        time.sleep(2)
        pct = 100 * (machine_busy_s() - b0) / 2
        if pct <= limit_pct or time.monotonic() - t0 >= max_wait:
            if n:
                log(f"  waited {time.monotonic() - t0:.0f} s for quiet; now {pct:.0f}% of a core busy")
            return pct
        if n % 15 == 0:
            log(f"  machine busy {pct:.0f}% of a core while nothing of ours runs (someone else's load): waiting")
        n += 1


# ------------------------------------------------------------------ database
def psql(db, *args, sql=None, check=True, capture=False):
    cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", PG["host"], "-p", PG["port"], "-U", PG["user"], "-d", db]
    if sql is not None:
        cmd += ["-c", sql]
    cmd += list(args)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"psql failed ({db}): {r.stderr.strip()}")
    return r.stdout if capture else r


def db_url(db):
    return f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{db}"


CREATED_DBS = []


def create_db(name, schema_file):
    psql("postgres", sql=f'DROP DATABASE IF EXISTS "{name}"')
    psql("postgres", sql=f'CREATE DATABASE "{name}"')
    CREATED_DBS.append(name)
    psql(name, "-f", schema_file)


def drop_db(name):
    psql("postgres", sql=f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', check=False)
    if name in CREATED_DBS:
        CREATED_DBS.remove(name)


# ------------------------------------------------------------------ servers
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
    return [os.path.join(bin_dir, "gunicorn"), "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{port}", "-w", WORKERS, app]


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

RUNNING = []
LOADGENS = []
KEEP_DBS = False
CGROUPS = []  # CPU cgroups made for --worker-cpu-share, removed at the end


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
        CGROUPS.append(path)
        for key, value in (("cpu.cfs_period_us", CPU_PERIOD_US), ("cpu.cfs_quota_us", quota), ("cgroup.procs", pid)):
            with open(os.path.join(path, key), "w") as f:
                f.write(str(value))
    elif os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        path = os.path.join("/sys/fs/cgroup", name)
        os.makedirs(path, exist_ok=True)
        CGROUPS.append(path)
        with open(os.path.join(path, "cpu.max"), "w") as f:
            f.write(f"{quota} {CPU_PERIOD_US}")
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(pid))
    else:
        raise RuntimeError("--worker-cpu-share needs a writable CPU cgroup (/sys/fs/cgroup)")


def remove_cgroups():
    for path in CGROUPS:
        try:
            os.rmdir(path)  # empty once its processes have exited
        except OSError as e:
            log(f"cgroup {path} not removed: {e}")
    CGROUPS.clear()


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
                "WEB_CONCURRENCY": WORKERS,
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra_env)
        self.logpath = os.path.join(logdir, f"{key}-{tag}.log")
        self.logf = open(self.logpath, "w")
        cmd = ["taskset", "-c", SERVER_CORE] + self.spec["cmd"](self.port)
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
        RUNNING.append(self)
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self._wait_ready()
        if WORKER_CPU_SHARE:
            self._cap_workers()

    def worker_pids(self):
        """The processes that serve connections: gunicorn's workers (not its master), or node."""
        tree = process_tree(self.proc.pid)
        return tree if self.key == "node" else [p for p in tree if p != self.proc.pid]

    def _cap_workers(self):
        for i, pid in enumerate(self.worker_pids()):
            cap_cpu(pid, WORKER_CPU_SHARE, f"chatbench-{os.getpid()}-{self.port}-{i}")
        log(f"  each of {len(self.worker_pids())} server process(es) capped at {WORKER_CPU_SHARE:g} of a core")

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
                    if len(process_tree(self.proc.pid)) < 1 + int(WORKERS):
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

    def stop(self):
        if self in RUNNING:
            RUNNING.remove(self)
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
    for s in list(RUNNING):
        try:
            s.stop()
        except Exception as e:  # noqa: BLE001
            log(f"cleanup: {e}")
    for p in LOADGENS:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    remove_cgroups()
    if not KEEP_DBS:
        for d in list(CREATED_DBS):
            drop_db(d)


# ------------------------------------------------------------------ load generator
def loadgen_cmd(mode, cfg, workdir, cpus=None):
    path = os.path.join(workdir, f"cfg-{mode}-{secrets.token_hex(4)}.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return ["taskset", "-c", cpus or LOADGEN_CORE, "node", LOADGEN, mode, path]


def cpu_list(spec):
    """The cores of a taskset CPU list: "1" -> ["1"], "0,2-4" -> ["0", "2", "3", "4"]."""
    cores = []
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        cores += [str(c) for c in range(int(lo), int(hi or lo) + 1)]
    return cores


# ws's native addons (bufferutil, utf-8-validate) off in the generator: for chat-sized
# frames each call into them costs more than it saves. Its CPU for one fixed step (2,000
# msgs/s, 20,000 deliveries/s, two runs each): 8.83 and 9.05 s with them, 8.26 and 8.33
# without (bench/README.md, goal 5 of issue #22). The Node reference server keeps them.
LOADGEN_ENV = {"WS_NO_BUFFER_UTIL": "1", "WS_NO_UTF_8_VALIDATE": "1"}


def run_loadgen(mode, cfg, workdir, timeout, window=None):
    """Run the load generator to its RESULT; `window(at)` is called at each MARK it emits."""
    p = subprocess.Popen(
        loadgen_cmd(mode, cfg, workdir),
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, **LOADGEN_ENV},
    )
    LOADGENS.append(p)
    killer = threading.Timer(timeout, lambda: os.killpg(p.pid, signal.SIGKILL))
    killer.start()
    result = None
    try:
        for line in p.stdout:
            if line.startswith("MARK ") and window:
                window(json.loads(line[5:])["at"])
            elif line.startswith("RESULT "):
                result = json.loads(line[7:])
        p.wait()
    finally:
        killer.cancel()
    if result is not None:
        return result
    if p.returncode == -signal.SIGKILL:
        return {"fatal": f"loadgen timed out after {timeout}s"}
    return {"fatal": f"loadgen exit {p.returncode} without a result"}


def run_chat(cfg, workdir, timeout, window=None):
    """The chat load generator for one step: one process, or --loadgen-procs of them sharing it."""
    procs = min(LOADGEN_PROCS, cfg["rooms"])
    if procs <= 1:
        return run_loadgen("chat", cfg, workdir, timeout, window)
    return run_chat_split(cfg, workdir, timeout, window, procs)


# marks that open a window go to `window` at the first process's, the others at the last's
OPENING_MARKS = ("measure-start", "send-start", "idle-start")


def run_chat_split(cfg, workdir, timeout, window, n):
    """One chat step run by `n` load generator processes, merged into one RESULT.

    The step's rooms are cut into `n` runs of whole rooms (a room's members all in one process,
    so that its checks of loss, duplicates and order stay exact), with the users and room names
    one process would give them. Each process connects its share and prints READY; once all
    have, each gets "start <epoch ms>" on stdin, one wall-clock instant a little ahead, so all
    send, warm up and measure over the same window. The processes are pinned round robin to
    the cores of --loadgen-cpus.
    """
    cores = cpu_list(LOADGEN_CORE)
    rooms, offset = cfg["rooms"], 0
    procs, files = [], []
    lines = queue.Queue()

    def pump(i, stream):
        for line in stream:
            lines.put((i, line))
        lines.put((i, None))

    for i in range(n):
        share = rooms // n + (1 if i < rooms % n else 0)
        files.append(os.path.join(workdir, f"lat-{cfg.get('tag', 'chat')}-{i}-{secrets.token_hex(4)}.f64"))
        shard = {"index": i, "procs": n, "roomOffset": offset, "samplesFile": files[i]}
        offset += share
        p = subprocess.Popen(
            loadgen_cmd("chat", {**cfg, "rooms": share, "shard": shard}, workdir, cores[i % len(cores)]),
            stdout=subprocess.PIPE,
            stderr=None,
            stdin=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, **LOADGEN_ENV},
        )
        LOADGENS.append(p)
        procs.append(p)
        threading.Thread(target=pump, args=(i, p.stdout), daemon=True).start()
    timed_out = threading.Event()

    def kill_all():
        timed_out.set()
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    killer = threading.Timer(timeout, kill_all)
    killer.start()
    results, ready, ended, started, marks = [None] * n, set(), set(), None, {}
    try:
        while len(ended) < n:
            i, line = lines.get()
            if line is None:
                ended.add(i)
            elif line.startswith("READY "):
                ready.add(i)
            elif line.startswith("MARK "):
                at = json.loads(line[5:])["at"]
                marks.setdefault(at, []).append(time.monotonic())
                if window and len(marks[at]) == (1 if at in OPENING_MARKS else len(started or ())):
                    window(at)
            elif line.startswith("RESULT "):
                results[i] = json.loads(line[7:])
            if started is None and len(ready | ended) == n:
                # everyone connected (or gone): one instant 250 ms ahead for all to start sending
                start_ms = int(time.time() * 1000) + 250
                started = []
                for j in sorted(ready - ended):
                    try:
                        procs[j].stdin.write(f"start {start_ms}\n")
                        procs[j].stdin.flush()
                    except (BrokenPipeError, OSError):
                        continue
                    started.append(j)
                for p in procs:
                    try:
                        p.stdin.close()
                    except (BrokenPipeError, OSError):
                        pass
        for p in procs:
            p.wait()
    finally:
        killer.cancel()
    for i, p in enumerate(procs):
        if results[i] is None:
            why = f"timed out after {timeout}s" if timed_out.is_set() else f"exit {p.returncode} without a result"
            results[i] = {"fatal": "loadgen " + why}
    samples = array("d")
    for path in files:
        try:
            with open(path, "rb") as f:
                samples.frombytes(f.read())
            os.remove(path)
        except OSError:
            pass
    res = merge_chat(results, samples, cfg, [cores[i % len(cores)] for i in range(n)])
    # how far apart the processes' marks reached run.py (they share absolute times)
    res["loadgen"]["markSpreadMs"] = {at: round(1000 * (max(ts) - min(ts)), 1) for at, ts in marks.items()}
    return res


def percentiles(xs):
    """loadgen.js `percentiles` in Python: the same ranks and rounding."""
    a = sorted(xs)
    n = len(a)

    def r3(x):
        return None if x is None else math.floor(x * 1000 + 0.5) / 1000  # JavaScript's Math.round

    def at(p):
        return a[min(n - 1, max(0, math.ceil((p / 100) * n) - 1))] if n else None

    return {
        "count": n,
        "mean": r3(sum(a) / n) if n else None,
        "p50": r3(at(50)),
        "p90": r3(at(90)),
        "p95": r3(at(95)),
        "p99": r3(at(99)),
        "p999": r3(at(99.9)),
        "max": r3(a[-1]) if n else None,
    }


def merge_chat(parts, samples, cfg, cpus):
    """The RESULTs of the processes that shared a chat step as one RESULT of the same shape:
    counters summed, latency percentiles over the union of every process's measured samples,
    the generator's CPU time summed; its self-check (CPU share of its core, event-loop delay)
    is the worst process's, late sends summed, and every process's own in `loadgen.perProcess`.
    """
    live = [r for r in parts if "fatal" not in r]
    first = live[0] if live else {}

    def total(key):
        return sum(r.get(key) or 0 for r in parts)

    def counts(key):
        out = {}
        for r in parts:
            for k, v in (r.get(key) or {}).items():
                out[k] = out.get(k, 0) + v
        return out

    def worst(key, of=lambda r: r):
        xs = [of(r).get(key) for r in live if of(r).get(key) is not None]
        return max(xs) if xs else None

    shards = [r.get("shard") or {} for r in live]
    measured_s = max((s.get("measuredS") or 0 for s in shards), default=0) or None
    lat = percentiles(samples)
    per_second = [r.get("worstMsBySecond") or [] for r in live]
    slow = [r.get("slowBySecond") or [] for r in live]
    seconds = max((len(x) for x in per_second), default=0)

    def lg(r):
        return r.get("loadgen") or {}

    res = {
        "mode": "chat",
        "rooms": cfg["rooms"],
        "members": first.get("members", cfg.get("members")),
        "ratePerMember": first.get("ratePerMember", cfg.get("rate")),
        "targetMsgsPerS": total("targetMsgsPerS"),
        "durationS": first.get("durationS"),
        "warmupS": first.get("warmupS"),
        "clients": total("clients"),
        "connected": total("connected"),
        "connectFailures": counts("connectFailures"),
        "connectS": worst("connectS"),
        "sent": total("sent"),
        "sentMsgsPerS": round(sum(s.get("sentMeasured", 0) for s in shards) / measured_s, 1) if measured_s else None,
        "expectedDeliveries": total("expectedDeliveries"),
        "deliveredUnique": total("deliveredUnique"),
        "lost": total("lost"),
        "duplicates": total("duplicates"),
        "outOfOrder": total("outOfOrder"),
        "idInversions": total("idInversions"),
        "wrongRoom": total("wrongRoom"),
        "foreign": total("foreign"),
        "badFrames": total("badFrames"),
        "errors": counts("errors"),
        "otherFrames": counts("otherFrames"),
        "unexpectedCloses": counts("unexpectedCloses"),
    }
    if any("mixSent" in r for r in parts):
        res["mixSent"] = counts("mixSent")
    delivered = sum(s.get("deliveredMeasured", 0) for s in shards)
    per_process = []
    for r, c in zip(parts, cpus, strict=True):
        keep = {k: r[k] for k in ("rooms", "connected", "sent", "cpuTotalS", "fatal") if k in r}
        per_process.append({"cpus": c, **keep, **lg(r)})
    res["storedMsgsPerS"] = res["sentMsgsPerS"]
    res["deliveriesPerS"] = round(delivered / measured_s, 1) if measured_s else None
    res["latencyMs"] = lat
    res["sendStartEpochMs"] = min((r["sendStartEpochMs"] for r in live if "sendStartEpochMs" in r), default=None)
    res["worstMsBySecond"] = [max((x[k] for x in per_second if k < len(x)), default=0) for k in range(seconds)]
    res["slowBySecond"] = [sum(x[k] for x in slow if k < len(x)) for k in range(seconds)]
    res["drainS"] = worst("drainS")
    res["loadgen"] = {
        "cpuPct": worst("cpuPct", lg),
        "eventLoopDelayP99Ms": worst("eventLoopDelayP99Ms", lg),
        "eventLoopDelayMaxMs": worst("eventLoopDelayMaxMs", lg),
        "lateSends": sum(lg(r).get("lateSends") or 0 for r in live),
        "procs": len(parts),
        "perProcess": per_process,
    }
    if len(samples) != sum(s.get("latencySamples", 0) for s in shards):
        res["latencySamplesMissing"] = sum(s.get("latencySamples", 0) for s in shards) - len(samples)
    # pass or fail as loadgen.js decides for one process
    reasons = [f"loadgen {i}: {r['fatal']}" for i, r in enumerate(parts) if "fatal" in r]
    failures = sum(res["connectFailures"].values())
    if res["connected"] == 0:
        reasons.append("no client connected")
    if failures:
        reasons.append(f"{failures} connect failures")
    if res["lost"] > 0:
        reasons.append(f"lost {res['lost']}")
    if res["duplicates"]:
        reasons.append(f"dup {res['duplicates']}")
    if res["outOfOrder"]:
        reasons.append(f"out-of-order {res['outOfOrder']}")
    if res["wrongRoom"]:
        reasons.append(f"wrong room {res['wrongRoom']}")
    if res["errors"]:
        reasons.append(f"errors {json.dumps(res['errors'], separators=(',', ':'))}")
    if sum(res["unexpectedCloses"].values()):
        reasons.append(f"closes {json.dumps(res['unexpectedCloses'], separators=(',', ':'))}")
    limit = cfg.get("p99LimitMs") or 100
    if lat["p99"] is None or lat["p99"] > limit:
        reasons.append(f"p99 {lat['p99']} ms")
    if "latencySamplesMissing" in res:
        reasons.append(f"{res['latencySamplesMissing']} latency samples missing")
    res["ok"] = not reasons
    res["reason"] = "; ".join(reasons)
    if (res["loadgen"]["cpuPct"] or 0) > 85:
        res["warning"] = "a load generator process near its CPU limit: latencies may include its own queueing"
    res["cpuTotalS"] = round(total("cpuTotalS"), 3)
    return res


class Window:
    """CPU seconds of the server and of PostgreSQL between the load generator's two MARKs."""

    def __init__(self, server_pid, db):
        self.server_pid, self.db = server_pid, db
        self.start = None
        self.result = None
        self.idle_start = None
        self.idle = None  # the same between idle-start and idle-end (storm --storm-idle)

    def __call__(self, at):
        sample = (time.monotonic(), tree_stats(self.server_pid)["cpu_s"], postgres_cpu(self.db))
        if at == "measure-start":
            self.start = sample
        elif at == "measure-end" and self.start:
            self.result = self.between(self.start, sample)
        elif at == "idle-start":
            self.idle_start = sample
        elif at == "idle-end" and self.idle_start:
            self.idle = self.between(self.idle_start, sample)

    @staticmethod
    def between(first, last):
        (t0, s0, pg0), (t1, s1, pg1) = first, last
        return {
            "wall_s": round(t1 - t0, 2),
            "server_cpu_s": round(s1 - s0, 2),
            "postgres_cpu_s": round(postgres_cpu_since(pg0, pg1), 2),
        }


class Interactive:
    """A loadgen process driven through stdin (idle mode)."""

    def __init__(self, mode, cfg, workdir):
        self.p = subprocess.Popen(
            loadgen_cmd(mode, cfg, workdir),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        LOADGENS.append(self.p)
        self.q = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.q.put(line.rstrip("\n"))
        self.q.put(None)

    def expect(self, tag, timeout):
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                return None
            if line is None:
                return None
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1 :])

    def send(self, cmd):
        try:
            self.p.stdin.write(cmd + "\n")
            self.p.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def finish(self, timeout=30):
        self.send("stop")
        res = self.expect("RESULT", timeout)
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
        return res


# ------------------------------------------------------------------ scenarios
def checkpoint(db):
    psql(db, sql="CHECKPOINT", check=False)


def chat_config(ctx, srv, rooms, **step):
    """The load generator's `chat` config for `rooms` rooms of this run's shape; `step`
    sets the rest (durationS, warmupS, tag, mix)."""
    o = ctx.opts
    return {
        "url": srv.url,
        "secret": ctx.secret,
        "welcome": srv.spec["welcome"],
        "rooms": rooms,
        "members": o.members,
        "rate": o.rate,
        "drainS": 3,
        "userBase": 100000,
        "roomPrefix": "bench",
        "clientIds": o.client_ids,
        **step,
    }


def warm_up(ctx, srv, rooms, mix=False, timeout=120):
    """An untimed chat step of 4 s at `rooms` rooms: opens the server's database pool, warms
    caches and JITs, so that the first measured step is not penalised."""
    cfg = chat_config(ctx, srv, rooms, durationS=4, warmupS=1, tag="warm", mix=mix)
    return run_chat(cfg, ctx.workdir, timeout=timeout)


def chat_step(ctx, srv, db, rooms, step_no, window=None):
    """One chat step at `rooms` rooms; `window` (a Window) reads the measured window's CPU."""
    o = ctx.opts
    cfg = chat_config(ctx, srv, rooms, durationS=o.step_seconds, warmupS=o.warmup_seconds, tag=f"s{step_no}", mix=o.mix)
    checkpoint(db)
    busy = wait_quiet(o.quiet_wait, o.quiet_limit)
    prof = start_profile(ctx, srv, f"step{step_no}-rooms{rooms}", o.step_seconds + 5)
    window = window or Window(srv.proc.pid, db)
    with Sampler(srv.proc.pid, db) as smp:
        res = run_chat(cfg, ctx.workdir, timeout=o.step_seconds + 180, window=window)
    if window.result and res.get("sentMsgsPerS"):
        # CPU per stored message in the measured window: the connects and the warm-up left out
        messages = res["sentMsgsPerS"] * window.result["wall_s"]
        window.result["server_us_per_msg"] = round(1e6 * window.result["server_cpu_s"] / messages, 1)
        window.result["postgres_us_per_msg"] = round(1e6 * window.result["postgres_cpu_s"] / messages, 1)
        res["measuredWindow"] = window.result
    if prof:
        res["profile"] = finish_profile(*prof)
    res["server"] = smp.finish(res.get("cpuTotalS"))
    res["busyBeforePct"] = round(busy, 1)
    res["disturbed"] = smp.result["other_cpu_pct"] > o.disturbed_limit
    res["serverAlive"] = srv.alive()
    if "fatal" in res:
        res["ok"] = False
        res["reason"] = res["fatal"]
    if not srv.alive():
        res["ok"] = False
        res["reason"] = (res.get("reason", "") + "; server died").strip("; ")
    lat = res.get("latencyMs", {})
    log(
        f"  step {step_no}: rooms={rooms} target={rooms * o.members * o.rate} msg/s -> "
        f"stored {res.get('storedMsgsPerS')} msg/s, deliveries {res.get('deliveriesPerS')}/s, "
        f"p50 {lat.get('p50')} p99 {lat.get('p99')} ms, lost {res.get('lost')}, "
        f"cpu s: server {smp.result['server_cpu_s']} postgres {smp.result['postgres_cpu_s']} loadgen "
        f"{smp.result['loadgen_cpu_s']} other {smp.result['other_cpu_s']} in {smp.result['wall_s']} s, "
        f"rss {smp.result['rss_mb_peak']} MB, "
        f"-> {'PASS' if res.get('ok') else 'FAIL: ' + res.get('reason', '')}"
        f"{' (DISTURBED by other load)' if res['disturbed'] else ''}"
    )
    if "measuredWindow" in res:
        w = res["measuredWindow"]
        log(
            f"    measured window ({w['wall_s']} s): server {w['server_cpu_s']} CPU s, "
            f"{w['server_us_per_msg']} us/msg; "
            f"postgres {w['postgres_cpu_s']} CPU s, {w['postgres_us_per_msg']} us/msg"
        )
    spikes = slow_seconds(res, o.p99_limit)
    if spikes:
        log(f"    seconds with deliveries over {o.p99_limit:g} ms (second: worst ms, how many): {spikes}")
    time.sleep(2)
    return res


def slow_seconds(res, limit_ms):
    """The seconds of a step (by send time) that held a delivery slower than the limit."""
    worst, slow = res.get("worstMsBySecond") or [], res.get("slowBySecond") or []
    return " ".join(f"{k}: {w} ms ({n})" for k, (w, n) in enumerate(zip(worst, slow, strict=False)) if w > limit_ms)


def start_profile(ctx, srv, tag, seconds):
    """py-spy on the server's (Python) worker for one step, if --profile names this server."""
    if srv.key not in ctx.opts.profile:
        return None
    spy = os.path.join(BENCH, ".venv", "bin", "py-spy")
    if not os.path.exists(spy):
        log("  --profile: bench/.venv/bin/py-spy missing (make -C bench setup)")
        return None
    pids = process_tree(srv.proc.pid)
    worker = pids[-1]  # gunicorn: the worker is the master's child
    out = os.path.join(ctx.workdir, f"profile-{srv.key}-{tag}")
    cmd = [
        "taskset",
        "-c",
        LOADGEN_CORE,
        spy,
        "record",
        "--pid",
        str(worker),
        "--duration",
        str(int(seconds)),
        "--rate",
        "200",
        "--nonblocking",
        "--format",
        "raw",
        "--output",
        out + ".txt",
    ]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    LOADGENS.append(p)
    return p, out


def finish_profile(p, out):
    try:
        p.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    path = out + ".txt"
    if not os.path.exists(path):
        return None
    # collapsed stacks "f1;f2;f3 N": self and inclusive samples per function
    own, incl, total = {}, {}, 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not n.isdigit():
                continue
            n = int(n)
            total += n
            frames = stack.split(";")
            own[frames[-1]] = own.get(frames[-1], 0) + n
            for fr in set(frames):
                incl[fr] = incl.get(fr, 0) + n
    lines = [
        f"py-spy samples: {total} (idle excluded); collapsed stacks in {os.path.basename(path)}",
        "",
        "self %  function",
    ]
    lines += [f"{100 * n / total:6.1f}  {fn}" for fn, n in sorted(own.items(), key=lambda x: -x[1])[:40]]
    lines += ["", "inclusive %  function"]
    lines += [f"{100 * n / total:6.1f}  {fn}" for fn, n in sorted(incl.items(), key=lambda x: -x[1])[:60]]
    with open(out + "-top.txt", "w") as f:
        f.write("\n".join(lines) + "\n")
    return os.path.relpath(out + "-top.txt", ROOT)


def scenario_chat(ctx, key, db):
    o = ctx.opts
    srv = ctx.start(key, db, "chat")
    steps, tried = [], {}
    try:
        warm = warm_up(ctx, srv, o.start_rooms, mix=o.mix)
        log(
            f"  warm-up: {warm.get('storedMsgsPerS')} msg/s p99 {warm.get('latencyMs', {}).get('p99')} ms "
            f"{'ok' if warm.get('ok') else warm.get('reason') or warm.get('fatal')}"
        )
        time.sleep(1)

        def step(rooms):
            if rooms not in tried:
                for attempt in range(1 + o.retries):
                    if not srv.alive():
                        return False
                    r = chat_step(ctx, srv, db, rooms, len(steps) + 1)
                    r["attempt"] = attempt + 1
                    steps.append(r)
                    tried[rooms] = r
                    # a failure while someone else loaded the machine says nothing: measure again
                    if r.get("ok") or not r.get("disturbed"):
                        break
            return tried[rooms].get("ok", False)

        lo, hi = 0, None  # lo: highest passing rooms, hi: lowest failing rooms
        rooms = o.start_rooms
        while rooms <= o.max_rooms:
            if step(rooms):
                lo = rooms
                rooms = max(rooms + 1, int(round(rooms * o.step_factor)))
            else:
                hi = rooms
                break
        if lo == 0 and hi is not None:  # first step failed: go down
            rooms = hi // 2
            while rooms >= 1:
                if step(rooms):
                    lo = rooms
                    break
                hi = rooms
                rooms //= 2
        for _ in range(o.bisect):
            if hi is None or lo == 0 or (hi - lo) <= max(1, lo * 0.05):
                break
            mid = (lo + hi) // 2
            if step(mid):
                lo = mid
            else:
                hi = mid
    finally:
        srv.stop()
    best = tried.get(lo) if lo else None
    return {"steps": steps, "best": best, "bestRooms": lo, "firstFailRooms": hi}


def scenario_idle(ctx, key, db):
    o = ctx.opts
    srv = ctx.start(key, db, "idle")
    out = {"n": o.idle_n}
    try:
        out["busyBeforePct"] = round(wait_quiet(o.quiet_wait, o.quiet_limit), 1)
        base = srv.stats()
        out["rss_mb_before"] = round(base["rss_mb"], 1)
        out["pss_mb_before"] = round(base["pss_mb"], 1)
        cpu0 = base["cpu_s"]
        lg = Interactive(
            "idle",
            {
                "url": srv.url,
                "secret": ctx.secret,
                "welcome": srv.spec["welcome"],
                "n": o.idle_n,
                "room": "lobby",
                "userBase": 500000,
                "connectLimitS": o.idle_connect_limit,
                "holdMaxS": o.idle_connect_limit + 180,
                "connectConcurrency": 200,
            },
            ctx.workdir,
        )
        ready = lg.expect("READY", o.idle_connect_limit + 90)
        if ready is None:
            out["error"] = "loadgen did not become ready"
            out["loadgen"] = lg.finish()
            return out
        out["loadgen"] = ready
        rss = []
        for _ in range(10):  # 5 s of samples with everything connected and quiet
            rss.append(srv.stats())
            time.sleep(0.5)
        out["rss_mb"] = round(max(s["rss_mb"] for s in rss), 1)
        out["pss_mb"] = round(max(s["pss_mb"] for s in rss), 1)
        out["kb_per_conn"] = round((out["rss_mb"] - out["rss_mb_before"]) * 1024 / max(1, ready["connected"]), 1)
        out["server_cpu_s_connect"] = round(rss[-1]["cpu_s"] - cpu0, 2)
        lg.send("fanout")
        out["fanout"] = lg.expect("FANOUT", 60)
        out["loadgen_end"] = lg.finish()
        out["serverAlive"] = srv.alive()
        log(
            f"  idle: {ready['connected']}/{o.idle_n} joined in {ready['connectS']}s "
            f"(+{ready.get('settleS')}s settle), "
            f"RSS {out['rss_mb_before']} -> {out['rss_mb']} MB (PSS {out['pss_mb']} MB), fanout {out['fanout']}"
        )
    finally:
        srv.stop()
    return out


HIST_ROOMS = 100
HIST_USERS = 100


def seed_history(db, rows, fast):
    """10M (or `rows`) room messages spread round-robin over rooms h0..h99 by users 1..100."""
    t0 = time.monotonic()
    pre = "SET synchronous_commit = off;"
    if fast:
        # bulk load without per-row FK trigger checks (rows are valid by construction)
        pre += " SET session_replication_role = replica;"
    sql = (
        f"{pre} INSERT INTO messages (from_user, room, content, timestamp) "
        f"SELECT 1 + (g % {HIST_USERS}), 'h' || (g % {HIST_ROOMS}), "
        f"'seeded history message ' || g || ' lorem ipsum dolor sit amet, consectetur adipiscing', "
        f"now() - ({rows} - g) * interval '10 milliseconds' FROM generate_series(1, {rows}) g"
    )
    psql(db, sql=sql)
    psql(db, sql="VACUUM ANALYZE")
    psql(db, sql="CHECKPOINT")
    n = int(psql(db, "-At", sql="SELECT count(*) FROM messages", capture=True).strip())
    return {"rows": n, "seed_s": round(time.monotonic() - t0, 1)}


def scenario_history(ctx, key, db):
    o = ctx.opts
    rooms = [f"h{i}" for i in range(HIST_ROOMS)]
    out = {}
    # 1. let the server itself create the users' and rooms' rows (whatever its schema needs)
    srv = ctx.start(key, db, "history-prime")
    try:
        pr = run_loadgen(
            "prime",
            {
                "url": srv.url,
                "secret": ctx.secret,
                "welcome": srv.spec["welcome"],
                "users": list(range(1, HIST_USERS + 1)),
                "roomNames": rooms,
                "roomsPerUser": 1,
            },
            ctx.workdir,
            timeout=120,
        )
    finally:
        srv.stop()
    if pr.get("connected") != HIST_USERS:
        return {"error": f"prime failed: {pr}"}
    # 2. seed by SQL
    log(f"  history: seeding {o.history_rows:,} messages ...")
    out["seed"] = seed_history(db, o.history_rows, o.seed_fast)
    log(f"  history: {out['seed']['rows']:,} rows in {out['seed']['seed_s']} s")
    # deep `before` targets: random stored ids with at least one page older than them
    deep = {}
    sample = psql(
        db,
        "-At",
        "-F",
        ",",
        capture=True,
        sql=f"SELECT room, id FROM messages TABLESAMPLE SYSTEM (0.2) WHERE room LIKE 'h%' "
        f"AND id > (SELECT min(id) FROM messages) + {HIST_ROOMS * 200} LIMIT 20000",
    )
    for line in sample.splitlines():
        r, i = line.split(",")
        deep.setdefault(r, []).append(int(i))
    deep_file = os.path.join(ctx.workdir, f"deep-{key}.json")
    with open(deep_file, "w") as f:
        json.dump(deep, f)
    # 3. measure on a fresh server process
    srv = ctx.start(key, db, "history")
    try:
        cfg = {
            "url": srv.url,
            "secret": ctx.secret,
            "welcome": srv.spec["welcome"],
            "clients": o.history_clients,
            "rate": o.history_rate,
            "durationS": o.history_seconds,
            "warmupS": 3,
            "limit": 50,
            "pages": 3,
            "roomNames": rooms,
            "deepFile": deep_file,
            "userBase": 900000,
        }
        wait_quiet(o.quiet_wait, o.quiet_limit)
        with Sampler(srv.proc.pid, db) as smp:
            res = run_loadgen("history", cfg, ctx.workdir, timeout=o.history_seconds + 90)
        res["server"] = smp.finish(res.get("cpuTotalS"))
        res["disturbed"] = smp.result["other_cpu_pct"] > o.disturbed_limit
        res["serverAlive"] = srv.alive()
    finally:
        srv.stop()
    out.update(res)
    lat = res.get("latencyMs", {})
    log(
        f"  history: {res.get('achievedReqPerS')} req/s, all p50 {lat.get('all', {}).get('p50')} p99 "
        f"{lat.get('all', {}).get('p99')} ms (latest p99 {lat.get('latest', {}).get('p99')}, page p99 "
        f"{lat.get('page', {}).get('p99')}, deep p99 {lat.get('deep', {}).get('p99')}), invalid {res.get('invalid')}, "
        f"errors {res.get('errors')}"
    )
    return out


# ------------------------------------------------------------------ fixed load (issue #22)
class WholeWindow(Window):
    """A Window that also reads the CPU from the first send until everything sent has arrived.

    A server that falls behind (on a machine others load too) works off its backlog after
    the measured window closes: per message sent, the whole send phase and drain is the
    steadier figure then.
    """

    def __call__(self, at):
        super().__call__(at)
        if at == "send-start":
            self.whole_start = (time.monotonic(), tree_stats(self.server_pid)["cpu_s"], postgres_cpu(self.db))
        elif at == "drained" and getattr(self, "whole_start", None):
            (t0, s0, pg0), t1 = self.whole_start, time.monotonic()
            self.whole = {
                "wall_s": round(t1 - t0, 2),
                "server_cpu_s": round(tree_stats(self.server_pid)["cpu_s"] - s0, 2),
                "postgres_cpu_s": round(postgres_cpu_since(pg0, postgres_cpu(self.db)), 2),
            }


class PerfWindow(WholeWindow):
    """A Window that also counts the server's user-space instructions and cycles with
    `perf stat` between the MARKs: far steadier than CPU time on a shared machine."""

    def __init__(self, server_pid, db, workdir, tag):
        super().__init__(server_pid, db)
        self.out = os.path.join(workdir, f"perf-{tag}.csv")
        self.perf = None

    def __call__(self, at):
        if at == "measure-start" and shutil.which("perf"):
            pids = ",".join(str(p) for p in process_tree(self.server_pid))
            self.perf = subprocess.Popen(
                ["perf", "stat", "-x", ",", "-e", "instructions:u,cycles:u", "-p", pids, "-o", self.out],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            LOADGENS.append(self.perf)
        super().__call__(at)
        if at == "measure-end" and self.perf:
            self.perf.send_signal(signal.SIGINT)
            try:
                self.perf.wait(10)
            except subprocess.TimeoutExpired:
                self.perf.kill()
            counts = {}
            try:
                with open(self.out) as f:
                    for line in f:
                        parts = line.strip().split(",")
                        if len(parts) > 2 and parts[0].replace(".", "").isdigit():
                            counts[parts[2].split(":")[0]] = int(float(parts[0]))
            except OSError:
                pass
            if not counts:
                log(f"    perf stat counted nothing (no hardware counters here, e.g. in a VM): see {self.out}")
            if self.result is not None:
                self.result.update(counts)


def fixed_variant(spec):
    """`server[:wN][:u][:redis]` -> (server, workers, unpinned, redis): one column of the fixed-load table."""
    parts = spec.split(":")
    v = {"name": spec, "server": parts[0], "workers": 1, "unpinned": False, "redis": False}
    for p in parts[1:]:
        if p.startswith("w") and p[1:].isdigit():
            v["workers"] = int(p[1:])
        elif p == "u":
            v["unpinned"] = True
        elif p == "redis":
            v["redis"] = True
        else:
            raise SystemExit(f"--fixed-variants: unknown part {p!r} of {spec!r}")
    if v["server"] not in SERVERS:
        raise SystemExit(f"--fixed-variants: unknown server {v['server']!r}")
    return v


def fixed_one(ctx, v, rep):
    """One fixed-load step of variant `v`: fresh database and server, warm-up, one measured step."""
    global SERVER_CORE, WORKERS
    o = ctx.opts
    saved = SERVER_CORE, WORKERS
    SERVER_CORE = "0,1" if v["unpinned"] else saved[0]
    WORKERS = str(v["workers"])
    key = v["server"]
    tag = v["name"].replace(":", "-") + f"-r{rep}"
    db = f"bench_fixed_{tag.replace('-', '_')}_{os.getpid()}"
    create_db(db, SERVERS[key]["schema"])
    env = dict(o.env.get(key, {}))
    if v["redis"]:
        env.update({"CHAT_BUS": "redis", "REDIS_URL": o.redis_url})
    srv = None
    try:
        srv = Server(key, db, ctx.secret, env, ctx.workdir, tag)
        warm = warm_up(ctx, srv, o.fixed_rooms, timeout=180)
        log(f"  {v['name']} rep {rep}: warm-up p99 {warm.get('latencyMs', {}).get('p99')} ms")
        time.sleep(1)
        window = PerfWindow(srv.proc.pid, db, ctx.workdir, tag) if o.perf else WholeWindow(srv.proc.pid, db)
        res = chat_step(ctx, srv, db, o.fixed_rooms, rep, window=window)
        whole = getattr(window, "whole", None)
        if whole and res.get("sent"):
            whole["server_us_per_msg"] = round(1e6 * whole["server_cpu_s"] / res["sent"], 1)
            whole["postgres_us_per_msg"] = round(1e6 * whole["postgres_cpu_s"] / res["sent"], 1)
            res["sendAndDrain"] = whole
            log(
                f"    send phase and drain ({whole['wall_s']} s): server {whole['server_us_per_msg']} us/msg, "
                f"postgres {whole['postgres_us_per_msg']} us/msg"
            )
        w = res.get("measuredWindow") or {}
        messages = (res.get("sentMsgsPerS") or 0) * w.get("wall_s", 0)
        if messages and "instructions" in w:
            w["instructions_per_msg"] = round(w["instructions"] / messages)
            w["cycles_per_msg"] = round(w.get("cycles", 0) / messages)
        if res.get("profile") is None:
            res.pop("profile", None)
        return res
    except Exception as e:  # noqa: BLE001 - one failing variant must not stop the others
        log(f"  {v['name']} rep {rep} failed: {e}")
        return {"ok": False, "reason": str(e)}
    finally:
        if srv:
            srv.stop()
        if not o.keep:
            drop_db(db)
        SERVER_CORE, WORKERS = saved


def scenario_fixed(ctx, results, save):
    """CPU per stored message at one fixed load, the variants interleaved rep by rep (issue #22, goals 2-3).

    Each rep runs every variant once, in turn, so that slow spells of a shared machine
    land on all of them alike; ratios are taken within a rep.
    """
    o = ctx.opts
    variants = [fixed_variant(s) for s in o.fixed_variants.split(",") if s]
    out = results.setdefault("fixed", {"rooms": o.fixed_rooms, "variants": [v["name"] for v in variants], "reps": []})
    for rep in range(1, o.reps + 1):
        row = {}
        out["reps"].append(row)
        for v in variants:
            log(
                f"== fixed load: {v['name']} rep {rep}/{o.reps} ({o.fixed_rooms} rooms, "
                f"{o.fixed_rooms * o.members * o.rate:g} msgs/s)"
            )
            row[v["name"]] = fixed_one(ctx, v, rep)
            save()
    return out


def _median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def report_fixed(fixed, opts):
    """Per variant: median over reps of CPU and instructions per message, and latency; ratios to the first."""
    names = fixed["variants"]
    base = names[0]
    per = {n: [] for n in names}
    for row in fixed["reps"]:
        for n in names:
            r = row.get(n) or {}
            w = r.get("measuredWindow") or {}
            bw = (row.get(base) or {}).get("measuredWindow") or {}
            wh = r.get("sendAndDrain") or {}
            bwh = (row.get(base) or {}).get("sendAndDrain") or {}
            per[n].append(
                {
                    "us": w.get("server_us_per_msg"),
                    "pg": w.get("postgres_us_per_msg"),
                    "whole": wh.get("server_us_per_msg"),
                    "whole_pg": wh.get("postgres_us_per_msg"),
                    "whole_ratio": (wh["server_us_per_msg"] / bwh["server_us_per_msg"])
                    if wh.get("server_us_per_msg") and bwh.get("server_us_per_msg")
                    else None,
                    "ins": w.get("instructions_per_msg"),
                    "p50": (r.get("latencyMs") or {}).get("p50"),
                    "p99": (r.get("latencyMs") or {}).get("p99"),
                    "ok": r.get("ok"),
                    "disturbed": r.get("disturbed"),
                    "other": (r.get("server") or {}).get("other_cpu_pct"),
                    "rate": r.get("storedMsgsPerS"),
                    "ratio": (w["server_us_per_msg"] / bw["server_us_per_msg"])
                    if w.get("server_us_per_msg") and bw.get("server_us_per_msg")
                    else None,
                    "ins_ratio": (w["instructions_per_msg"] / bw["instructions_per_msg"])
                    if w.get("instructions_per_msg") and bw.get("instructions_per_msg")
                    else None,
                }
            )
    rows = []
    for n in names:
        xs = per[n]
        col = lambda k, xs=xs: [x[k] for x in xs]  # noqa: E731
        rows.append(
            [
                n,
                fmt(_median(col("rate"))),
                " / ".join(fmt(x, 0) for x in col("us")),
                fmt(_median(col("us")), 0),
                fmt(_median(col("pg")), 0),
                " / ".join(fmt(x, 0) for x in col("whole")),
                fmt(_median(col("whole_pg")), 0),
                f"{_median(col('whole_ratio')):.2f}x" if _median(col("whole_ratio")) else "-",
                fmt(_median(col("ins")), 0),
                fmt(_median(col("p50")), 1),
                fmt(_median(col("p99")), 1),
                sum(1 for x in xs if x["ok"]),
                " / ".join(fmt(x, 0) for x in col("other")),
                f"{_median(col('ratio')):.2f}x" if _median(col("ratio")) else "-",
                f"{_median(col('ins_ratio')):.2f}x" if _median(col("ins_ratio")) else "-",
            ]
        )
    headers = [
        "variant",
        "stored msgs/s",
        "server us/msg per rep",
        "server us/msg (median)",
        "postgres us/msg",
        "send+drain: server us/msg per rep",
        "send+drain: postgres us/msg",
        f"send+drain vs {base}",
        "user instructions/msg",
        "p50 ms",
        "p99 ms",
        "steps passed",
        "other load % per rep",
        f"us/msg vs {base}",
        f"instructions vs {base}",
    ]
    if all(row[8] == "-" for row in rows):  # no hardware counters: leave their columns out
        headers = [h for i, h in enumerate(headers) if i not in (8, 14)]
        rows = [[c for i, c in enumerate(row) if i not in (8, 14)] for row in rows]
    head = (
        f"### Fixed load: {fixed['rooms']} rooms x {opts.members} members x {opts.rate:g} msgs/s "
        f"({fixed['rooms'] * opts.members * opts.rate:,.0f} msgs/s), {len(fixed['reps'])} interleaved reps\n"
    )
    return head + "\n" + table(headers, rows)


# ------------------------------------------------------------------ one large room (issue #22, goal 4)
def bigroom_one(ctx, key, rep):
    """`--bigroom-n` members in one room on a fresh server, one sending 1 msg/s: latency at every member."""
    o = ctx.opts
    tag = f"bigroom-r{rep}"
    db = f"bench_bigroom_{key}_{rep}_{os.getpid()}"
    create_db(db, SERVERS[key]["schema"])
    srv = None
    try:
        srv = ctx.start(key, db, tag)
        wait_quiet(o.quiet_wait, o.quiet_limit)
        cfg = {
            "url": srv.url,
            "secret": ctx.secret,
            "welcome": srv.spec["welcome"],
            "n": o.bigroom_n,
            "room": "big",
            "rate": o.bigroom_rate,
            "durationS": o.bigroom_seconds,
            "warmupS": 2,
            "connectConcurrency": 200,
        }
        with Sampler(srv.proc.pid, db) as smp:
            res = run_loadgen("bigroom", cfg, ctx.workdir, timeout=o.bigroom_seconds + 600)
        res["server"] = smp.finish(res.get("cpuTotalS"))
        res["disturbed"] = smp.result["other_cpu_pct"] > o.disturbed_limit
        lat = res.get("latencyMs") or {}
        log(
            f"  {key} rep {rep}: {res.get('connected')}/{o.bigroom_n} joined in {res.get('connectS')} s "
            f"(+{res.get('settleS')} s settle); {res.get('messages')} messages, lost {res.get('lost')}; "
            f"latency p50 {lat.get('p50')} p99 {lat.get('p99')} max {lat.get('max')} ms; to all p99 "
            f"{(res.get('msToAll') or {}).get('p99')} ms; other load {smp.result['other_cpu_pct']} %"
        )
        return res
    except Exception as e:  # noqa: BLE001 - one failing server must not stop the others
        log(f"  bigroom {key} rep {rep} failed: {e}")
        return {"ok": False, "reason": str(e)}
    finally:
        if srv:
            srv.stop()
        if not o.keep:
            drop_db(db)


def scenario_bigroom(ctx, results, save):
    """One room of 5,000 members and one sender at 1 msg/s, the servers interleaved rep by rep."""
    o = ctx.opts
    servers = [s for s in o.servers.split(",") if s]
    out = results.setdefault("bigroom", {"n": o.bigroom_n, "servers": servers, "reps": []})
    for rep in range(1, o.reps + 1):
        row = {}
        out["reps"].append(row)
        for key in servers:
            log(f"== one room of {o.bigroom_n}: {key} rep {rep}/{o.reps}")
            row[key] = bigroom_one(ctx, key, rep)
            save()
    return out


def report_bigroom(big, opts):
    rows = []
    for key in big["servers"]:
        rs = [row.get(key) or {} for row in big["reps"]]
        lat = [r.get("latencyMs") or {} for r in rs]
        rows.append(
            [
                key,
                " / ".join(f"{r.get('connected', '-')}" for r in rs),
                " / ".join(fmt(r.get("connectS"), 1) for r in rs),
                " / ".join(fmt(r.get("lost")) for r in rs),
                " / ".join(fmt(x.get("p50"), 1) for x in lat),
                " / ".join(fmt(x.get("p99"), 1) for x in lat),
                fmt(_median([x.get("p99") for x in lat]), 1),
                " / ".join(fmt(x.get("max"), 1) for x in lat),
                " / ".join(fmt((r.get("server") or {}).get("other_cpu_pct"), 0) for r in rs),
            ]
        )
    head = (
        f"### One room of {big['n']:,} members, one sender at {opts.bigroom_rate:g} msg/s for "
        f"{opts.bigroom_seconds:g} s ({len(big['reps'])} interleaved reps; per rep)\n"
    )
    return (
        head
        + "\n"
        + table(
            [
                "server",
                "joined",
                "connect+join s",
                "lost",
                "p50 ms",
                "p99 ms",
                "p99 ms (median)",
                "max ms",
                "other load %",
            ],
            rows,
        )
    )


# Scenarios that start their servers themselves, alternating them rep by rep:
# name -> (run(ctx, results, save), report(its results, opts)).
INTERLEAVED = {"fixed": (scenario_fixed, report_fixed), "bigroom": (scenario_bigroom, report_bigroom)}


def run_interleaved(ctx, scenarios, results, meta):
    def save():
        with open(os.path.join(ctx.workdir, "results.json"), "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)

    for sc in scenarios:
        if sc in INTERLEAVED:
            INTERLEAVED[sc][0](ctx, results, save)
            save()


def report_interleaved(results, opts):
    return "".join("\n\n" + rep(results[sc], opts) for sc, (_, rep) in INTERLEAVED.items() if sc in results)


# ------------------------------------------------------------------ storm (issues #20, #22)
STORM_USER_BASE = 700000
STORM_PREFIX = "st"
STORM_PER_USER = 20


def storm_rooms_sql(n, room_size):
    """The SQL expression of user i's k-th room: loadgen.js stormRooms, the same formula."""
    return f"'{STORM_PREFIX}' || ((k * {n // room_size}) + ((i + 7 * k) % {n}) / {room_size})"


def seed_storm(db, key, n, room_size, before, away):
    """Users, rooms, memberships and messages of a storm, by SQL: the state a server restart
    leaves. Each room holds `before` messages its members had seen (the last one is their
    `since`) and `away` sent while they were disconnected, ids interleaved over the rooms.
    The references have no membership: only their rooms. Returns the resume file's content,
    {room: [since, [ids above since]]} (empty for a reference)."""
    t0 = time.monotonic()
    rooms = n * STORM_PER_USER // room_size
    sender = STORM_USER_BASE - 1  # not one of the reconnecting users: their unread counts count it
    if key != "project":
        psql(db, sql=f"INSERT INTO rooms (name) SELECT '{STORM_PREFIX}' || r FROM generate_series(0, {rooms - 1}) r")
        return {}, round(time.monotonic() - t0, 1)
    per_room = before + away
    psql(
        db,
        sql=f"""SET synchronous_commit = off;
        INSERT INTO users (id, username) SELECT {STORM_USER_BASE} + i, 'u' || ({STORM_USER_BASE} + i)
            FROM generate_series(0, {n - 1}) i;
        INSERT INTO users (id, username) VALUES ({sender}, 'storm-sender');
        INSERT INTO rooms (name, last_seq)
            SELECT '{STORM_PREFIX}' || r, {per_room} FROM generate_series(0, {rooms - 1}) r;
        INSERT INTO messages (from_user, from_username, room, content, seq)
            SELECT {sender}, 'storm-sender', '{STORM_PREFIX}' || r, 'storm message ' || j || ' of room ' || r, j
            FROM generate_series(1, {per_room}) j, generate_series(0, {rooms - 1}) r ORDER BY j, r;
        INSERT INTO chat_members (room, user_id, last_read_id)
            SELECT {storm_rooms_sql(n, room_size)}, {STORM_USER_BASE} + i, 0
            FROM generate_series(0, {n - 1}) i, generate_series(0, {STORM_PER_USER - 1}) k;
        UPDATE chat_members c SET last_read_id = m.id FROM messages m
            WHERE m.room = c.room AND m.seq = {before};""",
    )
    psql(db, sql="VACUUM ANALYZE")
    rows = psql(
        db,
        "-At",
        "-F",
        ",",
        capture=True,
        sql=f"SELECT room, seq, id FROM messages WHERE room LIKE '{STORM_PREFIX}%' AND seq >= {before} "
        f"ORDER BY room, id",
    )
    resume = {}
    for line in rows.splitlines():
        room, seq, mid = line.split(",")
        entry = resume.setdefault(room, [0, []])
        if int(seq) == before:
            entry[0] = int(mid)
        else:
            entry[1].append(int(mid))
    return resume, round(time.monotonic() - t0, 1)


def scenario_storm(ctx, key, db):
    """N users, each a member of 20 rooms, reconnect at once to a freshly started server and
    resume every room with `since` (the references: connect and join the 20 rooms)."""
    o = ctx.opts
    n = o.storm_n
    if n % o.storm_room_size:
        raise RuntimeError("--storm-n must be a multiple of --storm-room-size")
    resume, seed_s = seed_storm(db, key, n, o.storm_room_size, o.storm_before, o.storm_away)
    resume_file = ""
    if resume:
        resume_file = os.path.join(ctx.workdir, f"resume-{key}.json")
        with open(resume_file, "w") as f:
            json.dump(resume, f)
    checkpoint(db)
    out = {
        "n": n,
        "roomSize": o.storm_room_size,
        "rooms": n * STORM_PER_USER // o.storm_room_size,
        "concurrency": o.storm_concurrency,
        "seed_s": seed_s,
        "replayPerClient": STORM_PER_USER * o.storm_away if resume else 0,
    }
    srv = ctx.start(key, db, "storm")  # the restart: a fresh process on the stored state
    try:
        cfg = {
            "url": srv.url,
            "secret": ctx.secret,
            "welcome": srv.spec["welcome"],
            "n": n,
            "perUser": STORM_PER_USER,
            "roomSize": o.storm_room_size,
            "roomPrefix": STORM_PREFIX,
            "userBase": STORM_USER_BASE,
            "concurrency": o.storm_concurrency,
            "limitS": o.storm_limit,
            "resumeFile": resume_file,
            "idleS": o.storm_idle,
        }
        out["busyBeforePct"] = round(wait_quiet(o.quiet_wait, o.quiet_limit), 1)
        prof = start_profile(ctx, srv, f"storm-{n}", o.storm_limit)
        window = Window(srv.proc.pid, db)
        with Sampler(srv.proc.pid, db) as smp:
            res = run_loadgen("storm", cfg, ctx.workdir, timeout=o.storm_limit + 120, window=window)
        if prof:
            prof[0].send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
            res["profile"] = finish_profile(*prof)
        res["server"] = smp.finish(res.get("cpuTotalS"))
        res["disturbed"] = smp.result["other_cpu_pct"] > o.disturbed_limit
        res["serverAlive"] = srv.alive()
        if window.result:
            w = window.result
            w["server_ms_per_connect"] = round(1000 * w["server_cpu_s"] / n, 3)
            w["postgres_ms_per_connect"] = round(1000 * w["postgres_cpu_s"] / n, 3)
            res["measuredWindow"] = w
        if window.idle:
            res["idleWindow"] = window.idle
            log(
                f"  storm: {n} clients idle for {window.idle['wall_s']} s: server {window.idle['server_cpu_s']} CPU s, "
                f"postgres {window.idle['postgres_cpu_s']} CPU s"
            )
    finally:
        srv.stop()
    out.update(res)
    w = out.get("measuredWindow", {})
    log(
        f"  storm: {out.get('resumed')}/{n} resumed in {out.get('wallS')} s (per client p50 "
        f"{(out.get('perClientMs') or {}).get('p50')} p99 {(out.get('perClientMs') or {}).get('p99')} ms), "
        f"replayed {out.get('replayed')}/{out.get('expectedReplay')}, lost {out.get('lost')}, "
        f"dup {out.get('duplicates')}, presence {(out.get('otherFrames') or {}).get('presence', 0)} "
        f"(last at {out.get('presenceSettledS')} s, {out.get('presenceAfterResumed')} after the resume), "
        f"server {w.get('server_cpu_s')} CPU s ({w.get('server_ms_per_connect')} ms/connect), postgres "
        f"{w.get('postgres_cpu_s')} CPU s, other load {smp.result['other_cpu_pct']}% -> "
        f"{'OK' if out.get('ok') else 'FAIL: ' + str(out.get('reason') or out.get('fatal'))}"
        f"{' (DISTURBED by other load)' if out.get('disturbed') else ''}"
    )
    return out


def storm_report(results):
    """The storm table: wall time and CPU per reconnecting client, each server against node."""
    storm = {k: v["storm"] for k, v in results.items() if "storm" in v}
    if not storm:
        return ""
    node_wall = (storm.get("node") or {}).get("wallS")
    rows = []
    for k, v in storm.items():
        w = v.get("measuredWindow") or {}
        srv = v.get("server") or {}
        rows.append(
            [
                k,
                f"{v.get('resumed', '-')}/{v['n']}",
                fmt(v.get("replayed")),
                fmt(v.get("wallS"), 2),
                fmt(w.get("server_cpu_s"), 2),
                fmt(w.get("server_ms_per_connect"), 2),
                fmt(w.get("postgres_cpu_s"), 2),
                fmt(w.get("postgres_ms_per_connect"), 2),
                fmt((v.get("perClientMs") or {}).get("p99"), 0),
                fmt((v.get("otherFrames") or {}).get("presence", 0)),
                fmt(v.get("presenceSettledS"), 2),
                fmt(srv.get("other_cpu_pct"), 0),
                "ok" if v.get("ok") else str(v.get("reason") or v.get("fatal") or v.get("error"))[:60],
                ratio(v.get("wallS"), node_wall),
            ]
        )
    return "\n### Reconnect storm (each client: welcome, 20 joins with `since`, every replay)\n\n" + table(
        [
            "server",
            "resumed",
            "replayed msgs",
            "wall s",
            "server CPU s",
            "server CPU ms/connect",
            "postgres CPU s",
            "postgres CPU ms/connect",
            "per-client p99 ms",
            "presence frames",
            "presence settled s",
            "other load %",
            "check",
            "wall vs node",
        ],
        rows,
    )


# ------------------------------------------------------------------ report
def fmt(x, nd=0):
    if x is None:
        return "-"
    if isinstance(x, float) and nd == 0:
        return f"{x:,.0f}"
    return f"{x:,.{nd}f}" if isinstance(x, (int, float)) else str(x)


def ratio(a, b):
    if not a or not b:
        return "-"
    return f"{a / b:.2f}x"


def table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join(
        [line, sep] + ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)) + " |" for r in rows]
    )


def first_fail(chat, opts):
    if not chat.get("firstFailRooms"):
        return chat.get("error", "not reached")[:80]
    step = next((s for s in chat["steps"] if s.get("rooms") == chat["firstFailRooms"]), {})
    return f"{chat['firstFailRooms'] * opts.members * opts.rate:,.0f}: {step.get('reason', '')[:70]}"


def report(results, opts):
    out = []
    chat = {k: v["chat"] for k, v in results.items() if "chat" in v}
    if chat:
        base = {k: (v["best"] or {}).get("storedMsgsPerS") for k, v in chat.items()}
        rows = []
        for k, v in chat.items():
            b = v["best"] or {}
            lat = b.get("latencyMs", {})
            srv = b.get("server", {})
            win = b.get("measuredWindow", {})
            rows.append(
                [
                    k,
                    fmt(b.get("storedMsgsPerS")),
                    fmt(b.get("deliveriesPerS")),
                    v["bestRooms"] * opts.members or "-",
                    fmt(lat.get("p50"), 1),
                    fmt(lat.get("p99"), 1),
                    fmt(srv.get("rss_mb_peak"), 0),
                    (f"{srv.get('server_cpu_s')}/{srv.get('wall_s')}" if srv else "-"),
                    fmt(win.get("server_us_per_msg"), 0),
                    fmt(win.get("postgres_us_per_msg"), 0),
                    fmt(b.get("idInversions")),
                    fmt(srv.get("other_cpu_pct"), 0),
                    first_fail(v, opts),
                    ratio(base.get(k), base.get("flask_plain")),
                    ratio(base.get(k), base.get("node")),
                ]
            )
        out.append(
            f"### Chat saturation (last passing step: p99 <= {opts.p99_limit:g} ms, "
            "nothing lost/duplicated/reordered/refused)\n"
        )
        out.append(
            table(
                [
                    "server",
                    "stored msgs/s",
                    "deliveries/s",
                    "clients",
                    "p50 ms",
                    "p99 ms",
                    "RSS MB",
                    "server CPU s/wall s",
                    "server CPU us/msg",
                    "postgres CPU us/msg",
                    "id-order inversions",
                    "other load %",
                    "first failing msgs/s: why",
                    "vs flask_plain",
                    "vs node",
                ],
                rows,
            )
        )
    idle = {k: v["idle"] for k, v in results.items() if "idle" in v}
    if idle:
        rows = []
        node_rss = (idle.get("node") or {}).get("rss_mb")
        plain_rss = (idle.get("flask_plain") or {}).get("rss_mb")
        for k, v in idle.items():
            lg = v.get("loadgen") or {}
            fo = v.get("fanout") or {}
            rows.append(
                [
                    k,
                    f"{lg.get('connected', '-')}/{v['n']}",
                    fmt(lg.get("connectS"), 1),
                    fmt(v.get("rss_mb_before"), 0),
                    fmt(v.get("rss_mb"), 0),
                    fmt(v.get("pss_mb"), 0),
                    fmt(v.get("kb_per_conn"), 1),
                    fmt(fo.get("msToAll"), 1) if fo else "-",
                    ratio(v.get("rss_mb"), node_rss),
                    ratio(v.get("rss_mb"), plain_rss),
                ]
            )
        out.append("\n### Idle connections in one room (server RSS summed over its process tree)\n")
        out.append(
            table(
                [
                    "server",
                    "joined",
                    "connect+join s",
                    "RSS MB before",
                    "RSS MB with conns",
                    "PSS MB",
                    "KB/conn",
                    "1 msg to all ms",
                    "RSS vs node",
                    "RSS vs flask_plain",
                ],
                rows,
            )
        )
    hist = {k: v["history"] for k, v in results.items() if "history" in v}
    if hist:
        rows = []
        for k, v in hist.items():
            lat = v.get("latencyMs", {})

            def g(kind, p, lat=lat):
                return fmt((lat.get(kind) or {}).get(p), 2)

            rows.append(
                [
                    k,
                    fmt((v.get("seed") or {}).get("rows")),
                    fmt(v.get("achievedReqPerS"), 0),
                    g("all", "p50"),
                    g("all", "p99"),
                    g("latest", "p99"),
                    g("page", "p99"),
                    g("deep", "p99"),
                    g("all", "max"),
                    f"{v.get('invalid', '-')}/{sum((v.get('errors') or {}).values())}",
                    v.get("error", ""),
                ]
            )
        out.append("\n### room_history limit 50 over WebSocket\n")
        out.append(
            table(
                [
                    "server",
                    "rows",
                    "req/s",
                    "p50 ms",
                    "p99 ms",
                    "latest p99",
                    "before-page p99",
                    "deep before p99",
                    "max ms",
                    "invalid/errors",
                    "note",
                ],
                rows,
            )
        )
    out.append(storm_report(results))
    return "\n".join(out)


# ------------------------------------------------------------------ main
class Ctx:
    def __init__(self, opts, workdir):
        self.opts, self.workdir = opts, workdir
        self.secret = secrets.token_urlsafe(32)

    def start(self, key, db, tag):
        return Server(key, db, self.secret, self.opts.env.get(key, {}), self.workdir, tag)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--servers", default="project,flask_plain,node", help="comma list of project,flask_plain,node")
    ap.add_argument("--scenarios", default="chat,idle,history", help="comma list of chat,idle,history,storm")
    ap.add_argument("--quick", action="store_true", help="short run (~10 min): 8 s steps, 2,000 idle, 1M history rows")
    ap.add_argument("--step-seconds", type=float)
    ap.add_argument("--warmup-seconds", type=float)
    ap.add_argument("--start-rooms", type=int, help="rooms in the first saturation step (10 clients each)")
    ap.add_argument("--step-factor", type=float)
    ap.add_argument("--bisect", type=int, help="bisection steps after the first failure")
    ap.add_argument("--max-rooms", type=int, default=2000)
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--rate", type=float, default=2.0, help="messages/s per member")
    ap.add_argument("--p99-limit", type=float, default=100.0)
    ap.add_argument(
        "--client-ids",
        action="store_true",
        help="chat: every message carries a clientId, as the React client sends them",
    )
    ap.add_argument(
        "--mix",
        action="store_true",
        help="chat: the v2 mixed workload: besides messages, reads, reactions, edits, deletes, "
        "history and search (issue #21; loadgen.js MIX_PER_MESSAGE)",
    )
    ap.add_argument("--idle-n", type=int)
    ap.add_argument(
        "--idle-connect-limit", type=int, default=600, help="seconds allowed to connect+join all idle clients"
    )
    ap.add_argument("--history-rows", type=int)
    ap.add_argument("--history-clients", type=int, default=40)
    ap.add_argument("--history-rate", type=float, default=5.0, help="room_history requests/s per client")
    ap.add_argument("--history-seconds", type=float)
    ap.add_argument("--storm-n", type=int, help="storm: reconnecting clients (5,000; quick 2,000)")
    ap.add_argument("--storm-room-size", type=int, default=20, help="storm: members per room (20 rooms per user)")
    ap.add_argument(
        "--storm-concurrency",
        type=int,
        default=500,
        help="storm: clients between their handshake and their last join_ack at a time",
    )
    ap.add_argument("--storm-before", type=int, default=10, help="storm: messages per room seen before the restart")
    ap.add_argument("--storm-away", type=int, default=2, help="storm: messages per room sent while away (replayed)")
    ap.add_argument(
        "--storm-idle",
        type=float,
        default=0,
        help="storm: then keep the clients connected and quiet this many seconds, and report the "
        "server's and PostgreSQL's CPU meanwhile (what a crowd costs at rest)",
    )
    ap.add_argument("--storm-limit", type=int, default=600, help="storm: seconds allowed for all to resume")
    ap.add_argument(
        "--no-seed-fast", dest="seed_fast", action="store_false", help="seed with FK/trigger checks on (slower)"
    )
    ap.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="SERVER:KEY=VALUE",
        help="extra environment for one server, e.g. project:CHAT_RATE_BURST=100",
    )
    ap.add_argument(
        "--quiet-limit",
        type=float,
        default=20.0,
        help="before each measurement wait until the machine is busy below this %% of a core",
    )
    ap.add_argument("--quiet-wait", type=float, default=600.0, help="longest wait for quiet, seconds")
    ap.add_argument(
        "--disturbed-limit",
        type=float,
        default=15.0,
        help="a step during which other processes used more than this %% of a core is 'disturbed'",
    )
    ap.add_argument("--retries", type=int, default=2, help="re-runs of a failing step that was disturbed")
    ap.add_argument(
        "--profile", default="", help="comma list of Python servers to sample with py-spy during each chat step"
    )
    ap.add_argument("--keep", action="store_true", help="keep the databases")
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="gunicorn workers of the Python servers (node has one process whatever this says)",
    )
    ap.add_argument(
        "--worker-cpu-share",
        type=float,
        help="cap each server process (gunicorn worker, node) at this fraction of one core, "
        "e.g. 0.35: stands in for a core per worker when measuring scaling with --workers",
    )
    ap.add_argument("--server-cpus", default="0", help="taskset CPU list of the server (default: core 0)")
    ap.add_argument("--loadgen-cpus", default="1", help="taskset CPU list of the load generator (default: core 1)")
    ap.add_argument(
        "--loadgen-procs",
        type=int,
        default=1,
        help="chat, fixed: load generator processes sharing each step, whole rooms each, pinned round robin "
        "to the cores of --loadgen-cpus; their results merged into one (default 1)",
    )
    ap.add_argument(
        "--fixed-rooms",
        type=int,
        default=100,
        help="fixed: rooms of the one load step (100 x 10 members x 2 msgs/s = 2,000 msgs/s)",
    )
    ap.add_argument(
        "--fixed-variants",
        default="project,node,project:u,project:w2:u",
        help="fixed: comma list of server[:wN][:u][:redis] (N workers, unpinned on all cores, Redis bus)",
    )
    ap.add_argument("--reps", type=int, default=3, help="fixed, bigroom: interleaved repetitions of every variant")
    ap.add_argument("--perf", action="store_true", help="fixed: count the server's instructions with perf stat")
    ap.add_argument("--bigroom-n", type=int, default=5000, help="bigroom: members of the one room")
    ap.add_argument("--bigroom-rate", type=float, default=1.0, help="bigroom: messages/s of the one sender")
    ap.add_argument("--bigroom-seconds", type=float, default=30.0, help="bigroom: sending time")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="fixed: Redis of the :redis variants")
    ap.add_argument("--out", default=os.path.join(BENCH, "results"))
    o = ap.parse_args(argv)
    global SERVER_CORE, LOADGEN_CORE, LOADGEN_PROCS, WORKERS, WORKER_CPU_SHARE
    SERVER_CORE, LOADGEN_CORE, WORKERS = o.server_cpus, o.loadgen_cpus, str(o.workers)
    if o.loadgen_procs < 1:
        ap.error("--loadgen-procs must be at least 1")
    LOADGEN_PROCS = o.loadgen_procs
    WORKER_CPU_SHARE = o.worker_cpu_share
    q = o.quick
    defaults = dict(
        step_seconds=8 if q else 20,
        warmup_seconds=2 if q else 4,
        start_rooms=20 if q else 30,
        step_factor=2.0 if q else 1.4,
        bisect=1 if q else 3,
        idle_n=2000 if q else 10000,
        history_rows=1_000_000 if q else 10_000_000,
        history_seconds=10 if q else 30,
        storm_n=2000 if q else 5000,
    )
    for k, v in defaults.items():
        if getattr(o, k) is None:
            setattr(o, k, v)
    env = {}
    for e in o.env:
        srv, kv = e.split(":", 1)
        k, v = kv.split("=", 1)
        env.setdefault(srv, {})[k] = v
    o.env = env
    o.profile = [s for s in o.profile.split(",") if s]
    return o


def preflight(servers):
    for tool in ("psql", "taskset", "node"):
        if not shutil.which(tool):
            sys.exit(f"missing {tool}")
    if not os.path.isdir(os.path.join(BENCH, "node_modules", "ws")):
        sys.exit("bench/node_modules missing: run `make -C bench setup` (npm ci)")
    if os.cpu_count() < 2:
        log("WARNING: fewer than 2 CPUs; server and load generator will share a core")
    if "flask_plain" in servers:
        bench_python()


def main(argv=None):
    o = parse_args(argv if argv is not None else sys.argv[1:])
    servers = [s.strip() for s in o.servers.split(",") if s.strip()]
    scenarios = [s.strip() for s in o.scenarios.split(",") if s.strip()]
    for s in servers:
        if s not in SERVERS:
            sys.exit(f"unknown server {s}")
    for s in scenarios:
        if s not in ("chat", "idle", "history", "storm") and s not in INTERLEAVED:
            sys.exit(f"unknown scenario {s}")
    skipped = [s for s in servers if not SERVERS[s]["available"]()]
    for s in skipped:
        log(f"skipping {s}: not available yet (needs {ROOT}/wsgi.py and schema.sql)")
    servers = [s for s in servers if s not in skipped]
    preflight(servers)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = os.path.join(o.out, stamp)
    os.makedirs(workdir, exist_ok=True)
    ctx = Ctx(o, workdir)
    global KEEP_DBS
    KEEP_DBS = o.keep
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    git = subprocess.run(
        ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    meta = {
        "started": stamp,
        "argv": sys.argv[1:],
        "git": git,
        "quick": o.quick,
        "servers": servers,
        "scenarios": scenarios,
        "cpus": os.cpu_count(),
        "server_core": SERVER_CORE,
        "loadgen_core": LOADGEN_CORE,
        "loadgen_procs": LOADGEN_PROCS,
        "workers": int(WORKERS),
        "worker_cpu_share": WORKER_CPU_SHARE,
        "postgres": psql("postgres", "-At", sql="SHOW server_version", capture=True).strip(),
        "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip(),
    }
    results = {}
    t_start = time.monotonic()
    try:
        for key in servers:
            results[key] = {}
            for sc in scenarios:
                if sc in INTERLEAVED:
                    continue
                db = f"bench_{key}_{sc}_{os.getpid()}"
                log(f"== {key}: {sc} (database {db})")
                create_db(db, SERVERS[key]["schema"])
                try:
                    fn = {
                        "chat": scenario_chat,
                        "idle": scenario_idle,
                        "history": scenario_history,
                        "storm": scenario_storm,
                    }[sc]
                    results[key][sc] = fn(ctx, key, db)
                except Exception as e:  # noqa: BLE001 - one failing server must not stop the others
                    log(f"  {key}/{sc} failed: {e}")
                    results[key][sc] = (
                        {"error": str(e), "best": None, "bestRooms": 0, "firstFailRooms": None, "steps": []}
                        if sc == "chat"
                        else {"error": str(e), "n": o.idle_n}
                    )
                finally:
                    if not o.keep:
                        drop_db(db)
                with open(os.path.join(workdir, "results.json"), "w") as f:
                    json.dump({"meta": meta, "results": results}, f, indent=1)
        run_interleaved(ctx, scenarios, results, meta)
    finally:
        cleanup()
    meta["elapsed_s"] = round(time.monotonic() - t_start)
    text = report(results, o) + report_interleaved(results, o)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write(
            f"Run {stamp} (git {git}), `python3 bench/run.py {' '.join(sys.argv[1:])}`, "
            f"{meta['elapsed_s']} s\n\n{text}\n"
        )
    print(text)
    log(f"results in {os.path.relpath(workdir, ROOT)}/ (results.json, report.md, server logs); {meta['elapsed_s']} s")


if __name__ == "__main__":
    main()
