"""Reading /proc: a process tree's CPU time and memory, the machine's busy time, waiting for quiet."""

import os
import time

from .log import log

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


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
