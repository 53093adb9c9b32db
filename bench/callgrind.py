"""Instructions the worker spends per room message, counted by callgrind (issue #22, goal 2).

CPU time per message moves a few per cent from run to run on this machine, which has no
hardware counters (`perf stat -e instructions` is "not supported"), so a change worth 2 %
drowns in it. Valgrind's callgrind counts the instructions a process executes, the same
from run to run within a fraction of a per cent: what a change to the message path saves
shows even when it is small.

The project's server runs under callgrind (gunicorn, one worker, its own database). What
is counted happens one at a time, the same way in every run; the count is zeroed after a
warm-up and dumped after the measured part: instructions of user space only (the kernel's
share, the system calls, is not counted, and is the same whatever Python does).

- messages (the default): ten clients join one room; the senders take turns, and every
  client reads a message before the next is sent, so each is stored alone and written to
  ten sockets.
- `--reads`: the same, and every client then marks the message read and gets its `read`
  frame: less the plain count, ten reads (issue #21's mixed workload).
- `--resume N`: the reconnect of the storm scenario (run.py), one user after another: N
  users, each a member of 20 rooms holding 2 messages sent while they were away (seeded as
  the storm seeds them), connect, get `welcome`, `join` their 20 rooms with `since` and
  get 20 `join_ack`s and 40 replayed messages, then disconnect.

    .venv/bin/python bench/callgrind.py                  # instructions a message
    .venv/bin/python bench/callgrind.py --resume 200     # instructions a reconnect
    .venv/bin/python bench/callgrind.py --reads          # a message and its ten reads
    .venv/bin/python bench/callgrind.py --keep /tmp/cg   # and keep the dump, for
    callgrind_annotate --inclusive=yes /tmp/cg/callgrind.out.*  # the costliest C functions

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
from harness.pg import create_db, db_url, drop_db, psql
from harness.procs import process_tree
from harness.scenarios.storm import STORM_PER_USER, STORM_USER_BASE, seed_storm, storm_rooms_sql
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
# --resume: members of each storm room, and the messages each room holds that its members
# saw (the last is their `since`) and that came while they were away (the storm's defaults)
ROOM_SIZE = 20
SEEN_BEFORE = 2
SENT_WHILE_AWAY = 2


def token(user_id: int, username: str) -> str:
    claims = {"sub": str(user_id), "username": username, "exp": int(time.time()) + 3600}
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


def open_session(port: int, user_id: int, username: str) -> websocket.WebSocket:
    """A client of the user, past its `welcome`."""
    url = f"ws://127.0.0.1:{port}/ws?token={token(user_id, username)}"
    ws = websocket.create_connection(url, timeout=FRAME_TIMEOUT_SECONDS)
    read_until(ws, lambda f: f.get("type") == "welcome")
    return ws


def connect(port: int, user_id: int) -> websocket.WebSocket:
    """A member of the counted room, joined."""
    ws = open_session(port, user_id, f"cg{user_id}")
    ws.send(orjson.dumps({"type": "join", "room": ROOM}).decode())
    read_until(ws, lambda f: f.get("type") == "join_ack")
    return ws


def exchange(clients: list[websocket.WebSocket], first: int, count: int, tag: str, reads: bool = False) -> None:
    """`count` messages, the senders in turn; each read by every client before the next
    (with `reads`, each client then marks it read and waits for its `read` frame)."""
    for n in range(first, first + count):
        client_id = f"{tag}-{n}"
        clients[n % len(clients)].send(
            orjson.dumps({"type": "message", "room": ROOM, "content": CONTENT, "clientId": client_id}).decode()
        )
        for ws in clients:
            frame = read_until(ws, lambda f, c=client_id: f.get("type") == "message" and f["data"].get("clientId") == c)
            if reads:
                ws.send(orjson.dumps({"type": "read", "room": ROOM, "id": frame["data"]["id"]}).decode())
                read_until(ws, lambda f: f.get("type") == "read")


def reconnect(port: int, user: int, rooms: list[str], resume: dict) -> None:
    """One storm client: connect, resume every room with `since`, take what it is owed, leave."""
    ws = open_session(port, STORM_USER_BASE + user, f"u{STORM_USER_BASE + user}")
    owed = set()
    for room in rooms:
        since, ids = resume[room]
        owed.update((room, i) for i in ids)
        ws.send(orjson.dumps({"type": "join", "room": room, "since": since}).decode())
    acks = 0
    while acks < len(rooms) or owed:
        frame = orjson.loads(ws.recv())
        if frame.get("type") == "join_ack":
            acks += 1
        elif frame.get("type") == "message":
            owed.discard((frame["data"]["room"], frame["data"]["id"]))
    ws.close()


def storm_rooms(db: str, users: int, room_size: int) -> list[list[str]]:
    """Each storm user's rooms, as the storm seeds them (storm_rooms_sql)."""
    rows = psql(
        db,
        "-At",
        capture=True,
        sql=f"SELECT string_agg({storm_rooms_sql(users, room_size)}, ',' ORDER BY k) "
        f"FROM generate_series(0, {users - 1}) i, generate_series(0, {STORM_PER_USER - 1}) k GROUP BY i ORDER BY i",
    )
    return [line.split(",") for line in rows.splitlines()]


def worker_pid(master: int) -> int:
    """The gunicorn worker: the master's only child (valgrind follows the fork)."""
    deadline = time.monotonic() + BOOT_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        tree = process_tree(master)
        if len(tree) > 1:
            return tree[-1]
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
    ap.add_argument(
        "--resume",
        type=int,
        default=0,
        metavar="N",
        help=f"count reconnects instead: N users (a multiple of {ROOM_SIZE})",
    )
    ap.add_argument(
        "--reads",
        action="store_true",
        help="every client also marks each message read (its `read` answered): a message and "
        "its readers' reads; less the plain count, what the reads cost",
    )
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
    if o.resume:
        if o.resume % ROOM_SIZE or o.resume < 2 * ROOM_SIZE:
            raise SystemExit(f"--resume must be a multiple of {ROOM_SIZE}, at least {2 * ROOM_SIZE}")
        resume, _ = seed_storm(db, "project", o.resume, ROOM_SIZE, SEEN_BEFORE, SENT_WHILE_AWAY)
        rooms = storm_rooms(db, o.resume, ROOM_SIZE)
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
        if o.resume:
            # the first fifth warms up, the rest is counted
            warm, count, what = o.resume // 5, o.resume - o.resume // 5, "reconnect"
            label = (
                f"reconnects of users in {STORM_PER_USER} rooms, {STORM_PER_USER * SENT_WHILE_AWAY} messages replayed"
            )

            def run(first: int, n: int, tag: str) -> None:
                for user in range(first, first + n):
                    reconnect(port, user, rooms[user], resume)
        else:
            warm, count, what = o.warmup, o.messages, "message"
            label = f"messages to a room of {o.clients}" + (", each marked read by all" if o.reads else "")
            clients = [connect(port, user_id) for user_id in range(1, o.clients + 1)]

            def run(first: int, n: int, tag: str) -> None:
                exchange(clients, first, n, tag, reads=o.reads)

        # A node that started alone announces its commits on the bus for the node timeout
        # (a peer may be starting too), then stops: count it as it runs from then on.
        time.sleep(NODE_TIMEOUT_SECONDS + 1)
        run(0, warm, "warm")
        callgrind_control("--zero", str(worker))
        started = time.monotonic()
        run(warm, count, "counted")
        wall = time.monotonic() - started
        callgrind_control("--dump=counted", str(worker))
        dumps = sorted(glob.glob(f"{out_dir}/callgrind.out.{worker}.*"), key=os.path.getmtime)
        if not dumps:
            raise SystemExit(f"no dump of the worker in {out_dir}")
        instructions = total_instructions(dumps[-1])
        print(
            f"{count} {label}, one at a time ({wall:.0f} s under callgrind): "
            f"{instructions:,} instructions, {instructions / count:,.0f} a {what}"
        )
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
