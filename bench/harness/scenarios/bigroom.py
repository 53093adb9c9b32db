"""The bigroom scenario (issue #22, goal 4): one large room and one sender, the servers interleaved rep by rep."""

import os

from ..loadgen import run_loadgen
from ..log import log
from ..pg import scratch_db
from ..procs import wait_quiet
from ..report import fmt, median, table
from ..servers import SERVERS
from ..windows import Sampler


def bigroom_one(ctx, key, rep):
    """`--bigroom-n` members in one room on a fresh server, one sending 1 msg/s: latency at every member."""
    o = ctx.opts
    tag = f"bigroom-r{rep}"
    db = f"bench_bigroom_{key}_{rep}_{os.getpid()}"
    try:
        with scratch_db(db, SERVERS[key]["schema"], o.keep), ctx.start(key, db, tag) as srv:
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
                fmt(median([x.get("p99") for x in lat]), 1),
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
