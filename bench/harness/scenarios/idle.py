"""The idle scenario: N connections joined to one room, the server's memory, then one message to all."""

import time

from ..loadgen import Interactive
from ..log import log
from ..procs import wait_quiet
from ..report import fmt, ratio, table


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


def report_idle(results):
    """The idle connections table: its heading and table, or nothing without idle results."""
    out = []
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
    return out
