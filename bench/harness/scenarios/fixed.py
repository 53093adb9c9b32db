"""The fixed scenario (issue #22): CPU per stored message at one fixed load, the variants interleaved rep by rep."""

import os
import time

from .. import settings
from ..log import log
from ..pg import scratch_db
from ..report import fmt, median, table
from ..servers import SERVERS, Server
from ..windows import PerfWindow, WholeWindow
from .chat import chat_step, warm_up


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
    o = ctx.opts
    saved = settings.SERVER_CORE, settings.WORKERS
    settings.SERVER_CORE = "0,1" if v["unpinned"] else saved[0]
    settings.WORKERS = str(v["workers"])
    key = v["server"]
    tag = v["name"].replace(":", "-") + f"-r{rep}"
    db = f"bench_fixed_{tag.replace('-', '_')}_{os.getpid()}"
    env = dict(o.env.get(key, {}))
    if v["redis"]:
        env.update({"CHAT_BUS": "redis", "REDIS_URL": o.redis_url})
    try:
        with (
            scratch_db(db, SERVERS[key]["schema"], o.keep),
            Server(key, db, ctx.secret, env, ctx.workdir, tag) as srv,
        ):
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
        settings.SERVER_CORE, settings.WORKERS = saved


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
                fmt(median(col("rate"))),
                " / ".join(fmt(x, 0) for x in col("us")),
                fmt(median(col("us")), 0),
                fmt(median(col("pg")), 0),
                " / ".join(fmt(x, 0) for x in col("whole")),
                fmt(median(col("whole_pg")), 0),
                f"{median(col('whole_ratio')):.2f}x" if median(col("whole_ratio")) else "-",
                fmt(median(col("ins")), 0),
                fmt(median(col("p50")), 1),
                fmt(median(col("p99")), 1),
                sum(1 for x in xs if x["ok"]),
                " / ".join(fmt(x, 0) for x in col("other")),
                f"{median(col('ratio')):.2f}x" if median(col("ratio")) else "-",
                f"{median(col('ins_ratio')):.2f}x" if median(col("ins_ratio")) else "-",
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
