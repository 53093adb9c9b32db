"""py-spy profiles of a Python server's worker during a step (--profile)."""

import os
import signal
import subprocess

from . import settings
from .log import log
from .paths import BENCH, ROOT
from .procs import process_tree


def start_profile(ctx, srv, tag, seconds):
    """py-spy on the server's (Python) worker for one step, if --profile names this server."""
    if srv.key not in ctx.opts.profile:
        return None
    spy = os.path.join(BENCH, ".venv", "bin", "py-spy")
    if not os.path.exists(spy):
        log("  --profile: bench/.venv/bin/py-spy missing (make -C bench setup)")
        return None
    pids = process_tree(srv.proc.pid)
    worker = pids[-1]  # gunicorn: the worker is the master's child
    out = os.path.join(ctx.workdir, f"profile-{srv.key}-{tag}")
    cmd = [
        "taskset",
        "-c",
        settings.LOADGEN_CORE,
        spy,
        "record",
        "--pid",
        str(worker),
        "--duration",
        str(int(seconds)),
        "--rate",
        "200",
        "--nonblocking",
        "--format",
        "raw",
        "--output",
        out + ".txt",
    ]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    settings.LOADGENS.append(p)
    return p, out


def finish_profile(p, out):
    try:
        p.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    path = out + ".txt"
    if not os.path.exists(path):
        return None
    # collapsed stacks "f1;f2;f3 N": self and inclusive samples per function
    own, incl, total = {}, {}, 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not n.isdigit():
                continue
            n = int(n)
            total += n
            frames = stack.split(";")
            own[frames[-1]] = own.get(frames[-1], 0) + n
            for fr in set(frames):
                incl[fr] = incl.get(fr, 0) + n
    lines = [
        f"py-spy samples: {total} (idle excluded); collapsed stacks in {os.path.basename(path)}",
        "",
        "self %  function",
    ]
    lines += [f"{100 * n / total:6.1f}  {fn}" for fn, n in sorted(own.items(), key=lambda x: -x[1])[:40]]
    lines += ["", "inclusive %  function"]
    lines += [f"{100 * n / total:6.1f}  {fn}" for fn, n in sorted(incl.items(), key=lambda x: -x[1])[:60]]
    with open(out + "-top.txt", "w") as f:
        f.write("\n".join(lines) + "\n")
    return os.path.relpath(out + "-top.txt", ROOT)
