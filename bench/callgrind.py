"""Instructions the worker spends per room message, counted by callgrind (issue #22, goal 2).

CPU time per message moves a few per cent from run to run on this machine, which has no
hardware counters (`perf stat -e instructions` is "not supported"), so a change worth 2 %
drowns in it. Valgrind's callgrind counts the instructions a process executes, the same
from run to run within a fraction of a per cent: what a change to the message path saves
shows even when it is small.

The project's server runs under callgrind (gunicorn, one worker, its own database).
Ten clients join one room; the senders take turns, one message at a time, and every client
reads it before the next is sent, so each message is stored alone and written to ten
sockets, the same way in every run. The count is zeroed after a warm-up and dumped after
the measured messages: instructions of user space only (the kernel's share, the system
calls, is not counted, and is the same whatever Python does).

    .venv/bin/python bench/callgrind.py                 # 300 messages, instructions a message
    .venv/bin/python bench/callgrind.py --messages 1000 --top 30  # and the 30 costliest C functions

Compare two versions of the code by running it in each (a worktree of the other commit).
Under callgrind the server runs about 50 times slower: the latency is not meaningful.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import jwt
import orjson
import websocket
from harness.pg import create_db, db_url, drop_db
from harness.servers import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENTS = 10
ROOM = "callgrind"
SECRET = "callgrind-secret-of-at-least-32-bytes!"
# The content of the chat scenario's messages (run.py): about as long, no mention.
CONTENT = "b1 run room member 12 1733000000000 lorem ipsum dolor sit amet"
BOOT_TIMEOUT_SECONDS = 300  # imports and the first requests under callgrind are slow
FRAME_TIMEOUT_SECONDS = 60
NODE_TIMEOUT_SECONDS = 10  # app/config.py's default


def token(user_id: int) -> str:
    claims = {"sub": str(user_id), "username": f"cg{user_id}", "exp": int(time.time()) + 3600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def wait_until_up(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}) before answering")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise SystemExit("the server did not answer /healthz in time")


def read_until(ws: websocket.WebSocket, wanted) -> dict:
    """Frames of `ws` until one for which wanted(frame) holds (presence and the like are skipped)."""
    while True:
        frame = orjson.loads(ws.recv())
        if wanted(frame):
            return frame


def connect(port: int, user_id: int) -> websocket.WebSocket:
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws?token={token(user_id)}", timeout=FRAME_TIMEOUT_SECONDS)
    read_until(ws, lambda f: f.get("type") == "welcome")
    ws.send(orjson.dumps({"type": "join", "room": ROOM}).decode())
    read_until(ws, lambda f: f.get("type") == "join_ack")
    return ws


def exchange(clients: list[websocket.WebSocket], first: int, count: int, tag: str) -> None:
    """`count` messages, the senders in turn; each read by every client before the next."""
    for n in range(first, first + count):
        client_id = f"{tag}-{n}"
        clients[n % len(clients)].send(
            orjson.dumps({"type": "message", "room": ROOM, "content": CONTENT, "clientId": client_id}).decode()
        )
        for ws in clients:
            read_until(ws, lambda f, c=client_id: f.get("type") == "message" and f["data"].get("clientId") == c)


def worker_pid(master: int) -> int:
    """The gunicorn worker: the master's only child (valgrind follows the fork)."""
    deadline = time.monotonic() + BOOT_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
        if out:
            return int(out[0])
        time.sleep(0.5)
    raise SystemExit("no gunicorn worker")


def callgrind_control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=120)


def total_instructions(dump: str) -> int:
    with open(dump) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise SystemExit(f"no totals in {dump}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=300, help="messages counted (default 300)")
    ap.add_argument("--warmup", type=int, default=100, help="messages sent before counting (default 100)")
    ap.add_argument(
        "--clients", type=int, default=CLIENTS, help=f"members of the room, all connected (default {CLIENTS})"
    )
    ap.add_argument("--top", type=int, default=0, help="also print the N C functions with the most instructions")
    ap.add_argument("--keep", help="keep the callgrind output in this directory")
    o = ap.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is not installed")
    db = f"bench_callgrind_{os.getpid()}"
    out_dir = tempfile.mkdtemp(prefix="callgrind-")
    port = free_port()
    env = dict(
        os.environ,
        DATABASE_URL=db_url(db),
        JWT_SECRET=SECRET,
        LOG_LEVEL="warning",
        CHAT_BUS="postgres",
        # one message at a time from ten senders stays far below the limits, but a slow
        # server must not make the client's burst count against it
        RATE_BURST_FRAMES="100000",
        RATE_FRAMES_PER_SECOND="100000",
        PING_INTERVAL_SECONDS="3600",
    )
    create_db(db, os.path.join(ROOT, "schema.sql"))
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--trace-children=yes",
        f"--callgrind-out-file={out_dir}/callgrind.out.%p",
        os.path.join(ROOT, ".venv", "bin", "gunicorn"),
        "-c",
        "gunicorn.conf.py",
        "-b",
        f"127.0.0.1:{port}",
        "-w",
        "1",
        "-t",
        "600",  # the arbiter must not take the slow worker for a hung one
        "wsgi:app",
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    clients: list[websocket.WebSocket] = []
    try:
        wait_until_up(port, proc)
        worker = worker_pid(proc.pid)
        clients = [connect(port, user_id) for user_id in range(1, o.clients + 1)]
        # A node that started alone announces its commits on the bus for the node timeout
        # (a peer may be starting too), then stops: count it as it runs from then on.
        time.sleep(NODE_TIMEOUT_SECONDS + 1)
        exchange(clients, 0, o.warmup, "warm")
        callgrind_control("--zero", str(worker))
        started = time.monotonic()
        exchange(clients, 0, o.messages, "counted")
        wall = time.monotonic() - started
        callgrind_control("--dump=counted", str(worker))
        dumps = sorted(glob.glob(f"{out_dir}/callgrind.out.{worker}.*"), key=os.path.getmtime)
        if not dumps:
            raise SystemExit(f"no dump of the worker in {out_dir}")
        instructions = total_instructions(dumps[-1])
        print(
            f"{o.messages} messages to a room of {o.clients}, one at a time ({wall:.0f} s under callgrind): "
            f"{instructions:,} instructions, {instructions / o.messages:,.0f} a message"
        )
        if o.top:
            report = subprocess.run(
                ["callgrind_annotate", "--inclusive=no", dumps[-1]], capture_output=True, text=True
            ).stdout
            lines = [line for line in report.splitlines() if "*" not in line[:3]]
            start = next(i for i, line in enumerate(lines) if "file:function" in line)
            print("\n".join(lines[start : start + o.top + 2]))
        if o.keep:
            os.makedirs(o.keep, exist_ok=True)
            shutil.copy(dumps[-1], o.keep)
    finally:
        for ws in clients:
            try:
                ws.close()
            except OSError:
                pass
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        drop_db(db)
        shutil.rmtree(out_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
