"""The chat scenario: the stepped search for the most messages/s a server keeps within the p99 limit."""

import time

from ..loadgen import run_chat
from ..log import log
from ..pg import checkpoint
from ..procs import wait_quiet
from ..pyspy import finish_profile, start_profile
from ..report import fmt, ratio, table
from ..windows import Sampler, Window


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
        "mixOnly": [kind for kind in o.mix_only.split(",") if kind],
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


def first_fail(chat, opts):
    if not chat.get("firstFailRooms"):
        return chat.get("error", "not reached")[:80]
    step = next((s for s in chat["steps"] if s.get("rooms") == chat["firstFailRooms"]), {})
    return f"{chat['firstFailRooms'] * opts.members * opts.rate:,.0f}: {step.get('reason', '')[:70]}"


def report_chat(results, opts):
    """The chat saturation table: its heading and table, or nothing without chat results."""
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
    return out
