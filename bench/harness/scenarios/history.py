"""The history scenario: room_history latency over WebSocket on a room table seeded with millions of messages."""

import json
import os
import time

from ..loadgen import run_loadgen
from ..log import log
from ..pg import psql
from ..procs import wait_quiet
from ..report import fmt, table
from ..windows import Sampler

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


def report_history(results):
    """The room_history table: its heading and table, or nothing without history results."""
    out = []
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
    return out
