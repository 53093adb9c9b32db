"""What a step costs: over a whole load generator run (Sampler), and between its MARKs (Window and kin)."""

import os
import shutil
import signal
import subprocess
import threading
import time

from . import settings
from .log import log
from .pg import postgres_cpu, postgres_cpu_since
from .procs import machine_busy_s, process_tree, tree_stats


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
            settings.LOADGENS.append(self.perf)
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
