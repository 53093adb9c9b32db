"""The Node load generator (bench/loadgen/loadgen.js): run it, share a chat step out and merge, drive it by stdin."""

import json
import math
import os
import queue
import secrets
import signal
import subprocess
import threading
import time
from array import array

from . import settings
from .paths import BENCH

LOADGEN = os.path.join(BENCH, "loadgen", "loadgen.js")


def loadgen_cmd(mode, cfg, workdir, cpus=None):
    path = os.path.join(workdir, f"cfg-{mode}-{secrets.token_hex(4)}.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return ["taskset", "-c", cpus or settings.LOADGEN_CORE, "node", LOADGEN, mode, path]


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
    settings.LOADGENS.append(p)
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
    procs = min(settings.LOADGEN_PROCS, cfg["rooms"])
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
    cores = cpu_list(settings.LOADGEN_CORE)
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
        settings.LOADGENS.append(p)
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
        settings.LOADGENS.append(self.p)
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
