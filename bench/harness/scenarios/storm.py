"""The storm scenario (issues #20, #22): N users reconnect at once to a restarted server and resume their rooms."""

import json
import os
import signal
import time

from ..loadgen import run_loadgen
from ..log import log
from ..pg import checkpoint, psql
from ..procs import wait_quiet
from ..pyspy import finish_profile, start_profile
from ..report import fmt, ratio, table
from ..windows import Sampler, Window

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
