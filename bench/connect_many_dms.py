"""How long a user with 50,000 DM partners waits to connect (issue #19, item 10a).

Creates a database of its own (dropped at the end, as run.py does it), gives one user
PARTNERS conversations of MESSAGES messages each, starts the server of this tree (one
gunicorn worker), then connects that user RUNS times, one connection after the other, and
prints the p50, p99 and max of the time from opening the WebSocket to the `welcome` frame
(the connect's statement and its registration in the hub run on the worker's event loop,
in between). Each connection is closed before the next opens.

    .venv/bin/python bench/connect_many_dms.py
    .venv/bin/python bench/connect_many_dms.py --partners 50000 --runs 50

To time another version of the server, copy this script into a checkout of it
(`git archive <commit> | tar -x -C /tmp/old`, with a .venv link) and run it there.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request

import jwt
import psycopg2
import websocket
from harness.paths import ROOT
from harness.pg import create_db, db_url, drop_db  # bench/harness: run.py's database handling
from harness.servers import free_port

SECRET = "bench-secret-that-is-long-enough-for-hs256"
USER_ID = 1
# The user's partners get ids after it.
FIRST_PARTNER = 1000


def seed(url: str, partners: int, messages: int) -> None:
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO users (id, username) SELECT g, 'u' || g FROM generate_series(%s, %s) g",
            (FIRST_PARTNER, FIRST_PARTNER + partners - 1),
        )
        cur.execute("INSERT INTO users (id, username) VALUES (%s, 'many')", (USER_ID,))
        # Conversations' messages interleaved in id order, as they would be when written live.
        cur.execute(
            """INSERT INTO messages (from_user, to_user, content, seq)
               SELECT CASE WHEN n %% 2 = 0 THEN %(me)s ELSE p END, CASE WHEN n %% 2 = 0 THEN p ELSE %(me)s END, 'hi', n
               FROM generate_series(1, %(messages)s) n, generate_series(%(first)s, %(last)s) p ORDER BY n, p""",
            {"me": USER_ID, "messages": messages, "first": FIRST_PARTNER, "last": FIRST_PARTNER + partners - 1},
        )
        cur.execute(
            """INSERT INTO dm_threads (user_low, user_high, last_seq)
               SELECT %s, g, %s FROM generate_series(%s, %s) g""",
            (USER_ID, messages, FIRST_PARTNER, FIRST_PARTNER + partners - 1),
        )
        # Each conversation's newest id, where the schema keeps it (dm_threads.last_id; a
        # version before it has no such column).
        cur.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_name = 'dm_threads' AND column_name = 'last_id'"
        )
        if cur.fetchone():
            cur.execute(
                """UPDATE dm_threads t SET last_id = newest.id
                   FROM (SELECT LEAST(from_user, to_user) AS low, GREATEST(from_user, to_user) AS high, max(id) AS id
                         FROM messages WHERE to_user IS NOT NULL GROUP BY 1, 2) AS newest
                   WHERE t.user_low = newest.low AND t.user_high = newest.high"""
            )
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    conn.close()


def start_server(url: str, port: int, log_path: str) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=url,
        JWT_SECRET=SECRET,
        WS_BIND_ADDR=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="1",
        LOG_LEVEL="warning",
    )
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "ab") as log:
        server = subprocess.Popen(
            [os.path.join(ROOT, ".venv", "bin", "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"server exited: see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return server
        except OSError:
            time.sleep(0.1)
    server.terminate()
    sys.exit(f"server not ready: see {log_path}")


def timings(port: int, runs: int) -> list[float]:
    token = jwt.encode({"user_id": USER_ID, "username": "many", "exp": int(time.time()) + 3600}, SECRET, "HS256")
    spent = []
    for _ in range(runs):
        started = time.perf_counter()
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws?token={token}", timeout=30)
        first = ws.recv()
        spent.append((time.perf_counter() - started) * 1000)
        assert '"welcome"' in first, first[:200]
        ws.close()
    return spent


def report(name: str, spent: list[float]) -> None:
    spent = sorted(spent)
    p99 = spent[min(len(spent) - 1, round(len(spent) * 0.99))]
    print(f"{name}: runs {len(spent)}, p50 {statistics.median(spent):.1f} ms, p99 {p99:.1f} ms, max {spent[-1]:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partners", type=int, default=50_000)
    parser.add_argument("--messages", type=int, default=2, help="messages per conversation")
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    name = f"bench_connect_{os.getpid()}"
    create_db(name, os.path.join(ROOT, "schema.sql"))
    server = None
    try:
        url = db_url(name)
        seed(url, args.partners, args.messages)
        port = free_port()
        server = start_server(url, port, os.path.join(ROOT, "var", f"bench-connect-{port}.log"))
        print(f"a user with {args.partners} DM partners, {args.messages} messages each ({ROOT})")
        timings(port, 3)  # the worker's pool connections, prepared statements, first plans
        report("connect to welcome", timings(port, args.runs))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        drop_db(name)


if __name__ == "__main__":
    main()
