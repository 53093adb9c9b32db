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

This file parses the arguments and runs the scenarios; the work is done by the package
bench/harness/ (its __init__ lists the modules).
"""

import argparse
import atexit
import datetime
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time

from harness import settings
from harness.log import log
from harness.paths import BENCH, ROOT
from harness.pg import create_db, drop_db, psql
from harness.scenarios import INTERLEAVED, report, report_interleaved, run_interleaved
from harness.scenarios.chat import scenario_chat
from harness.scenarios.history import scenario_history
from harness.scenarios.idle import scenario_idle
from harness.scenarios.storm import scenario_storm
from harness.servers import SERVERS, Server, bench_python, cleanup


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
    ap.add_argument(
        "--mix-only",
        default="",
        help="chat, with --mix: only these kinds of the mix (comma-separated: read, react, edit, "
        "history, search, delete), each at its usual rate: what each kind costs alone; ping: as many "
        "frames as the whole mix, all pings (what any frame costs)",
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
    settings.SERVER_CORE, settings.LOADGEN_CORE, settings.WORKERS = o.server_cpus, o.loadgen_cpus, str(o.workers)
    if o.loadgen_procs < 1:
        ap.error("--loadgen-procs must be at least 1")
    if o.mix_only and not o.mix:
        ap.error("--mix-only chooses among the kinds of --mix: give both")
    settings.LOADGEN_PROCS = o.loadgen_procs
    settings.WORKER_CPU_SHARE = o.worker_cpu_share
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
    settings.KEEP_DBS = o.keep
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
        "server_core": settings.SERVER_CORE,
        "loadgen_core": settings.LOADGEN_CORE,
        "loadgen_procs": settings.LOADGEN_PROCS,
        "workers": int(settings.WORKERS),
        "worker_cpu_share": settings.WORKER_CPU_SHARE,
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
