"""Read state, search and history on a big database (issues #20, #21): 10 M messages, 100 k users.

Seeds a database of its own in SQL (generate_series, seeded random), unless it is there
already from an earlier run (--reuse, the default: seeding 10 M messages takes minutes):
  - USERS users, ROOMS rooms; MESSAGES messages, 90 % in rooms (a room drawn with a square
    skew: a few busy rooms, many quiet ones), the rest DMs between random users;
  - eight words per message from a vocabulary of VOCAB words with a cubic skew, so that
    every frequency exists: `w0`-`w2` are in ~15 % of the messages each, `w20`-`w40` in ~1 in
    200, `w200`-`w400` in ~1 in 1,000, `w3000`-`w5000` in ~1 in 5,000, and `w100000` on in a
    few dozen to a few hundred;
  - one message in a hundred mentions a user (half of them one of the bench users), one in
    a thousand @room;
  - BENCH_USERS bench users (ids 1-100), each a member of 50 rooms (half drawn by activity,
    half uniformly) with a read marker 0 to UNREAD_MAX messages behind the room's newest, and
    a party to 50 conversations of their own (2 % of all messages, some mentioning them),
    with a marker 0 to 20 messages behind; other users are members of 5 rooms each.
The bulk insert runs with the messages indexes dropped and synchronous_commit off; then
schema.sql is loaded again, which builds them (as `make db` does on an existing database),
and VACUUM ANALYZE (what autovacuum does to an insert-only table). Each later run loads
schema.sql again, so a changed index is built on the kept database.

Then measures, for random bench users, p50 / p99 / max over RUNS each:
  - welcome: connect to `welcome` over a real server (gunicorn, one gevent worker, this
    tree), the user's 50 rooms and 50 conversations with their unread and mention counts;
    one connection at a time, 0.2 s after the previous one closed;
  - search (app/search.py, the handler's database work), per word class: over everything
    the user may read, in one of their rooms (`room`), in one of their conversations
    (`with`), and the next page (`before` = the last id of the first);
  - room_history (app/store.py) of one of the user's rooms: the latest 50, 3 pages back,
    and a deep page (`before` a random id of the room).

    .venv/bin/python bench/read_search.py                          # 10 M, kept as bench_big_10m
    .venv/bin/python bench/read_search.py --messages 2000000 --db bench_big_2m
    .venv/bin/python bench/read_search.py --reseed                 # seed again
    .venv/bin/python bench/read_search.py --drop                   # drop the database at the end
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import jwt
import psycopg2
import websocket
from connect_many_dms import SECRET, start_server
from harness.paths import ROOT
from harness.pg import db_url, drop_db, psql  # bench/harness: run.py's database handling
from harness.servers import free_port

sys.path.insert(0, ROOT)

from app import search, store  # noqa: E402

USERS = 100_000
ROOMS = 2000
VOCAB = 200_000
BENCH_USERS = 100
ROOMS_PER_USER = 50
PARTNERS_PER_USER = 50
UNREAD_MAX = 1000
OTHER_ROOMS = 5
# Bench user b's partners: PARTNER_BASE + (b - 1) * PARTNERS_PER_USER + k, k < 50.
PARTNER_BASE = 1000

# Messages: `kind` < 0.02 is a bench user's conversation, < 0.10 a DM between others
# (never a bench user: their conversations are the 50 above), else a room message.
MESSAGES = """
INSERT INTO messages (from_user, to_user, room, content, mentions, timestamp)
SELECT CASE WHEN kind < 0.02 AND flip THEN partner WHEN kind < 0.02 THEN bench ELSE sender END,
       CASE WHEN kind < 0.02 AND flip THEN bench WHEN kind < 0.02 THEN partner WHEN kind < 0.10 THEN receiver END,
       CASE WHEN kind >= 0.10 THEN 'r' || floor(%(rooms)s * random() ^ 2)::int END,
       words || CASE WHEN pick < 0.005 THEN ' @u' || bench WHEN pick < 0.01 THEN ' @u' || receiver
                     WHEN pick < 0.011 THEN ' @room' ELSE '' END,
       CASE WHEN pick < 0.005 THEN ARRAY['u' || bench] WHEN pick < 0.01 THEN ARRAY['u' || receiver]
            WHEN pick < 0.011 THEN ARRAY['room'] END,
       now() - make_interval(secs => %(messages)s - n)
FROM (
    SELECT n, kind, flip, pick, sender, receiver, bench,
           %(partner_base)s + (bench - 1) * %(partners)s + floor(random() * %(partners)s)::int AS partner,
           concat_ws(' ', {words}) AS words
    FROM (
        SELECT n, random() AS kind, random() < 0.5 AS flip, random() AS pick,
               %(bench_users)s + 1 + floor(random() * (%(users)s - %(bench_users)s))::int AS sender,
               %(bench_users)s + 1 + floor(random() * (%(users)s - %(bench_users)s))::int AS receiver,
               1 + floor(random() * %(bench_users)s)::int AS bench
        FROM generate_series(1, %(messages)s) AS n
    ) AS d
) AS g
"""
WORD = "'w' || floor(%(vocab)s * random() ^ 3)::int"

AFTER = """
UPDATE rooms r SET last_seq = c.n FROM (SELECT room, count(*) AS n FROM messages WHERE room IS NOT NULL GROUP BY room) c
WHERE r.name = c.room;
INSERT INTO dm_threads (user_low, user_high, last_seq, last_id)
SELECT LEAST(from_user, to_user), GREATEST(from_user, to_user), count(*), max(id) FROM messages
WHERE to_user IS NOT NULL GROUP BY 1, 2;
-- Bench users: 50 rooms each, half by activity (the messages' skew), half uniformly.
INSERT INTO chat_members (room, user_id, last_read_id)
SELECT room, u, COALESCE((SELECT id FROM messages m WHERE m.room = c.room ORDER BY id DESC
                          OFFSET c.behind LIMIT 1), 0)
FROM (SELECT u, 'r' || CASE WHEN k %% 2 = 0 THEN floor(%(rooms)s * random() ^ 2)
                                ELSE floor(%(rooms)s * random()) END::int AS room,
             floor(random() * %(unread_max)s)::int AS behind
      FROM generate_series(1, %(bench_users)s) AS u, generate_series(1, %(per_user)s * 2) AS k) AS c
ON CONFLICT DO NOTHING;
-- (drawn twice as many, duplicates dropped: keep 50 each)
DELETE FROM chat_members c USING (
    SELECT room, user_id, row_number() OVER (PARTITION BY user_id ORDER BY room) AS k
    FROM chat_members WHERE user_id <= %(bench_users)s) x
WHERE c.room = x.room AND c.user_id = x.user_id AND x.k > %(per_user)s;
INSERT INTO chat_members (room, user_id)
SELECT 'r' || floor(random() * %(rooms)s)::int, u
FROM generate_series(%(bench_users)s + 1, %(users)s) AS u, generate_series(1, %(other_rooms)s)
ON CONFLICT DO NOTHING;
INSERT INTO dm_reads (user_id, other_id, last_read_id)
SELECT c.me, c.other, COALESCE((SELECT id FROM messages m
    WHERE m.to_user IS NOT NULL AND LEAST(m.from_user, m.to_user) = LEAST(c.me, c.other)
      AND GREATEST(m.from_user, m.to_user) = GREATEST(c.me, c.other)
    ORDER BY id DESC OFFSET floor(random() * 20)::int LIMIT 1), 0)
FROM (SELECT u AS me, %(partner_base)s + (u - 1) * %(partners)s + k AS other
      FROM generate_series(1, %(bench_users)s) AS u, generate_series(0, %(partners)s - 1) AS k) AS c;
CREATE TABLE bench_seeded (messages bigint NOT NULL, at timestamptz NOT NULL DEFAULT now());
"""


def seed(name: str, messages: int) -> None:
    url = db_url(name)
    psql("postgres", sql=f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    psql("postgres", sql=f'CREATE DATABASE "{name}"')
    psql(name, "-f", os.path.join(ROOT, "schema.sql"))
    params = {
        "rooms": ROOMS,
        "users": USERS,
        "messages": messages,
        "vocab": VOCAB,
        "unread_max": UNREAD_MAX,
        "bench_users": BENCH_USERS,
        "per_user": ROOMS_PER_USER,
        "partners": PARTNERS_PER_USER,
        "partner_base": PARTNER_BASE,
        "other_rooms": OTHER_ROOMS,
    }
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SET synchronous_commit = off")
    cur.execute("SET maintenance_work_mem = '1GB'")
    cur.execute("SET work_mem = '256MB'")
    # The indexes of `messages` are built after the bulk insert, by schema.sql.
    cur.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'messages' AND indexname <> 'messages_pkey'")
    for (index,) in cur.fetchall():
        cur.execute(f'DROP INDEX "{index}"')
    step(cur, "users and rooms", "SELECT setseed(0.21)")
    cur.execute("INSERT INTO users (id, username) SELECT n, 'u' || n FROM generate_series(1, %(users)s) AS n", params)
    cur.execute("INSERT INTO rooms (name) SELECT 'r' || n FROM generate_series(0, %(rooms)s - 1) AS n", params)
    step(cur, f"{messages:,} messages", MESSAGES.format(words=", ".join([WORD] * 8)), params)
    step(cur, "indexes (schema.sql)", None)
    psql(name, "-f", os.path.join(ROOT, "schema.sql"))
    step(cur, "vacuum analyze", "VACUUM ANALYZE messages")
    step(cur, "memberships, conversations, markers", AFTER, params)
    step(cur, "vacuum analyze", "VACUUM ANALYZE")
    cur.execute("INSERT INTO bench_seeded (messages) VALUES (%s)", (messages,))
    conn.close()
    step(None, "", None)


_STEP: list = []


def step(cur, name: str, sql: str | None, params: dict | None = None) -> None:
    """Print how long the previous step took, then run this one."""
    if _STEP:
        print(f"  {_STEP[0]}: {time.monotonic() - _STEP[1]:.0f} s", flush=True)
    _STEP[:] = [name, time.monotonic()]
    if sql:
        cur.execute(sql, params)


def seeded(name: str) -> int | None:
    """The number of messages the database was seeded with, or None if not (completely)."""
    try:
        conn = psycopg2.connect(db_url(name))
    except psycopg2.OperationalError:
        return None
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('bench_seeded') IS NOT NULL")
            if not cur.fetchone()[0]:
                return None
            cur.execute("SELECT messages FROM bench_seeded")
            row = cur.fetchone()
            return row[0] if row else None
    finally:
        conn.close()


# ------------------------------------------------------------------ measuring


# Wall time counts waiting for a core, and this machine is shared (2 cores): each figure
# also comes with the CPU time it cost, on a quiet machine its latency. CPU time: of the
# processes in CPU_PIDS (/proc/<pid>/schedstat, in ns), and of this thread if CPU_THREAD.
CPU_PIDS: list[int] = []
CPU_THREAD = [True]


def _cpu_ns() -> int:
    spent = time.thread_time_ns() if CPU_THREAD[0] else 0
    for pid in CPU_PIDS:
        try:
            with open(f"/proc/{pid}/schedstat") as f:
                spent += int(f.read().split()[0])
        except OSError:
            pass
    return spent


class Sample:
    """Wall and CPU milliseconds of timed steps."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def time(self, one):
        wall, cpu = time.perf_counter_ns(), _cpu_ns()
        result = one()
        self.cpu.append((_cpu_ns() - cpu) / 1e6)
        self.wall.append((time.perf_counter_ns() - wall) / 1e6)
        return result


def timed(runs: int, one) -> Sample:
    sample = Sample()
    for _ in range(runs):
        sample.time(one)
    return sample


def _p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def report(name: str, sample: Sample, note: str = "") -> None:
    wall, cpu = sample.wall, sample.cpu
    print(
        f"{name:<38} p50 {_p(wall, 0.5):7.2f} ms  p99 {_p(wall, 0.99):7.2f} ms  max {max(wall):7.2f} ms"
        f"  | CPU p50 {_p(cpu, 0.5):6.2f} ms  p99 {_p(cpu, 0.99):6.2f} ms  {note}",
        flush=True,
    )


class Users:
    """The bench users' rooms and partners, read once."""

    def __init__(self, cur) -> None:
        cur.execute("SELECT user_id, array_agg(room) FROM chat_members WHERE user_id <= %s GROUP BY 1", (BENCH_USERS,))
        self.rooms = dict(cur.fetchall())

    @staticmethod
    def partners(user: int) -> list[int]:
        first = PARTNER_BASE + (user - 1) * PARTNERS_PER_USER
        return list(range(first, first + PARTNERS_PER_USER))


# Word classes: (name, first, last word number). Word k of the cubic skew is in about
# 8 * ((k+1)^(1/3) - k^(1/3)) / VOCAB^(1/3) of the messages.
WORD_CLASSES = [
    ("common (~15 %)", 0, 2),
    ("frequent (~1 in 200)", 20, 40),
    ("mid (~1 in 1,000)", 200, 400),
    ("uncommon (~1 in 5,000)", 3000, 5000),
    ("rare (~1 in 50,000)", 100_000, 199_999),
]


def measure_search(cur, users: Users, runs: int, rng: random.Random) -> None:
    for label, low, high in WORD_CLASSES:
        measure_class(cur, users, runs, rng, label, low, high)


def measure_class(cur, users: Users, runs: int, rng: random.Random, label: str, low: int, high: int) -> None:
    def query() -> str:
        return f"w{rng.randint(low, high)}"

    def everywhere() -> None:
        search.search(cur, rng.randint(1, BENCH_USERS), query(), None, None, None, 20)

    def in_room() -> None:
        user = rng.randint(1, BENCH_USERS)
        search.search(cur, user, query(), rng.choice(users.rooms[user]), None, None, 20)

    def with_partner() -> None:
        user = rng.randint(1, BENCH_USERS)
        search.search(cur, user, query(), None, rng.choice(users.partners(user)), None, 20)

    pages = Sample()

    def next_page() -> None:
        user, word = rng.randint(1, BENCH_USERS), query()
        first = search.search(cur, user, word, None, None, None, 20)
        if len(first) < 20:
            return  # no second page: not timed
        pages.time(lambda: search.search(cur, user, word, None, None, first[-1].id, 20))

    report(f"search {label}", timed(runs, everywhere))
    report("  in one room (room)", timed(runs, in_room))
    report("  in one conversation (with)", timed(runs, with_partner))
    for _ in range(runs):
        next_page()
    if pages.wall:
        report("  next page (before)", pages, f"({len(pages.wall)} had one)")


def measure_history(cur, users: Users, runs: int, rng: random.Random) -> None:
    def pick() -> str:
        user = rng.randint(1, BENCH_USERS)
        return rng.choice(users.rooms[user])

    report("room_history latest 50", timed(runs, lambda: store.room_history(cur, pick(), 50)))
    back, deep = Sample(), Sample()
    for _ in range(runs):
        room = pick()
        page = store.room_history(cur, room, 50)
        for _ in range(3):
            if not page:
                break
            page = back.time(lambda room=room, page=page: store.room_history(cur, room, 50, before=page[0].id))
        cur.execute("SELECT last_seq FROM rooms WHERE name = %s", (room,))
        size = cur.fetchone()[0]
        cur.execute(
            "SELECT id FROM messages WHERE room = %s ORDER BY id DESC OFFSET %s LIMIT 1", (room, rng.randrange(size))
        )
        row = cur.fetchone()
        if row:
            deep.time(lambda room=room, row=row: store.room_history(cur, room, 50, before=row[0]))
    report("room_history 3 pages back (before)", back)
    report("room_history deep (before a random id)", deep)


def measure_welcome(url: str, runs: int, rng: random.Random) -> None:
    port = free_port()
    server = start_server(url, port, os.path.join(ROOT, "var", f"bench-read-search-{port}.log"))
    try:

        def connect() -> dict:
            user = rng.randint(1, BENCH_USERS)
            claims = {"user_id": user, "username": f"u{user}", "exp": int(time.time()) + 3600}
            token = jwt.encode(claims, SECRET, "HS256")
            ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws?token={token}", timeout=30)
            frame = ws.recv()
            ws.close()
            return frame

        for _ in range(3):
            connect()  # the worker's pool connections, prepared statements, first plans
        # CPU: the server's processes and the PostgreSQL backends of its pool (not this
        # client's handshake).
        CPU_PIDS[:] = _children(server.pid) + [server.pid] + _backends(url)
        CPU_THREAD[0] = False
        sample = Sample()
        frames = []
        for _ in range(runs):
            # Not timed: the server's work for the previous connection's close (its user
            # leaves the presence of 50 rooms) is done before the next connection opens.
            time.sleep(0.2)
            frames.append(sample.time(connect))
        CPU_PIDS.clear()
        CPU_THREAD[0] = True
        report("welcome: connect to welcome", sample)
        data = json.loads(frames[-1])["data"]
        rooms, conversations = data["rooms"], data["conversations"]
        print(
            f"  (last welcome: {len(rooms)} rooms, {sum(r['unread'] for r in rooms)} unread, "
            f"{sum(r['mentions'] for r in rooms)} mentions; {len(conversations)} conversations, "
            f"{sum(c['unread'] for c in conversations)} unread, {sum(c['mentions'] for c in conversations)} mentions)"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


def _children(pid: int) -> list[int]:
    """The processes under `pid` (gunicorn's workers)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            for child in map(int, f.read().split()):
                found += [child, *_children(child)]
    return found


def _backends(url: str) -> list[int]:
    """The PostgreSQL backends connected to the database of `url` (but the asking one)."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return [pid for (pid,) in cur]
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000_000)
    parser.add_argument("--db", default="bench_big_10m", help="database name (kept, and reused when seeded)")
    parser.add_argument("--reseed", action="store_true", help="seed again even if the database is there")
    parser.add_argument("--drop", action="store_true", help="drop the database at the end")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--no-schema", action="store_true", help="reuse without loading schema.sql again")
    parser.add_argument("--only", choices=["welcome", "search", "history"], action="append")
    args = parser.parse_args()
    url = db_url(args.db)
    try:
        have = None if args.reseed else seeded(args.db)
        if have is None:
            print(f"seeding {args.db} with {args.messages:,} messages", flush=True)
            seed(args.db, args.messages)
        elif args.no_schema:
            print(f"reusing {args.db} ({have:,} messages) as it is")
        else:
            if have != args.messages:
                sys.exit(f"{args.db} holds {have:,} messages, not {args.messages:,}: --reseed or another --db")
            started = time.monotonic()
            # The schema of this tree (builds a changed index on the kept data).
            psql(args.db, "-f", os.path.join(ROOT, "schema.sql"))
            # The statistics of an index's expression come with ANALYZE: a new index has none.
            psql(args.db, sql="ANALYZE messages")
            spent = time.monotonic() - started
            print(f"reusing {args.db} ({have:,} messages); schema.sql loaded and analyzed in {spent:.1f} s")
        print(f"machine load (1, 5 min): {os.getloadavg()[:2]}")
        only = args.only or ["welcome", "search", "history"]
        rng = random.Random(7)
        if "welcome" in only:
            measure_welcome(url, args.runs, rng)
        conn = psycopg2.connect(url)
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("SET TIME ZONE 'UTC'")
        users = Users(cur)
        cur.execute("SELECT pg_backend_pid()")
        CPU_PIDS[:] = [cur.fetchone()[0]]
        if "search" in only:
            measure_search(cur, users, args.runs, rng)
        if "history" in only:
            measure_history(cur, users, args.runs, rng)
        conn.close()
        print(f"machine load (1, 5 min): {os.getloadavg()[:2]}")
    finally:
        if args.drop:
            drop_db(args.db)


if __name__ == "__main__":
    main()
