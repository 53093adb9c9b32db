"""Read state and search on a big database (issue #21): welcome's counts, search, history.

Creates a database of its own (dropped at the end unless --keep), loads schema.sql, and
fills it in SQL (generate_series, seeded): MESSAGES messages over ROOMS rooms and USERS
users, a tenth of them DMs; eight words each drawn from a vocabulary of VOCAB words with a
steep (cubic) skew, so that a few words are in most messages and most words in few; one
message in a hundred mentions a user, one in a thousand @room. BENCH_USERS users are
members of 50 rooms each, with a read marker 0 to UNREAD_MAX messages behind the newest.

Then, each RUNS times for a random bench user, and prints p50 / p99 / max:
  - welcome: what start_session (app/websocket.py) asks the database: the session, the
    latest 200 conversations, the unread and mention counts of the 50 rooms and of those
    conversations;
  - search, by how common the word is (in most messages, in ~1 in 1,000, rare), over the
    user's rooms and DMs, limit 20;
  - room_history of a random room, limit 50.

    .venv/bin/python bench/read_search.py                       # 2 M messages
    .venv/bin/python bench/read_search.py --messages 10000000   # the issue's size
    .venv/bin/python bench/read_search.py --keep read_bench     # keep (or reuse) the database
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

import psycopg2
from run import ROOT, create_db, db_url, drop_db  # bench/run.py: same database handling

sys.path.insert(0, ROOT)

from app import read_state, search, store  # noqa: E402
from app.membership import WELCOME_LIST_MAX  # noqa: E402
from app.tokens import Identity  # noqa: E402

ROOMS = 1000
USERS = 10_000
VOCAB = 20_000
BENCH_USERS = 100
ROOMS_PER_USER = 50
UNREAD_MAX = 1000

FILL = """
SELECT setseed(0.21);
INSERT INTO rooms (name) SELECT 'r' || n FROM generate_series(0, %(rooms)s - 1) AS n;
INSERT INTO users (id, username) SELECT n, 'u' || n FROM generate_series(1, %(users)s) AS n;
INSERT INTO messages (from_user, to_user, room, content, mentions, timestamp)
SELECT sender, CASE WHEN dm THEN receiver END, CASE WHEN dm THEN NULL ELSE 'r' || (n %% %(rooms)s) END,
       words || CASE WHEN pick < 0.01 THEN ' @u' || receiver WHEN pick < 0.011 THEN ' @room' ELSE '' END,
       CASE WHEN pick < 0.01 THEN ARRAY['u' || receiver] WHEN pick < 0.011 THEN ARRAY['room'] END,
       now() - make_interval(secs => %(messages)s - n)
FROM (
    SELECT n, 1 + floor(random() * %(users)s)::int AS sender, 1 + floor(random() * %(users)s)::int AS receiver,
           random() < 0.1 AS dm, random() AS pick,
           concat_ws(' ', {words}) AS words
    FROM generate_series(1, %(messages)s) AS n
) AS g;
INSERT INTO dm_threads (user_low, user_high, last_seq)
SELECT LEAST(from_user, to_user), GREATEST(from_user, to_user), count(*) FROM messages
WHERE to_user IS NOT NULL GROUP BY 1, 2;
INSERT INTO chat_members (room, user_id, last_read_id)
SELECT room, u, COALESCE((SELECT id FROM messages m WHERE m.room = c.room ORDER BY id DESC
                          OFFSET c.behind LIMIT 1), 0)
FROM (SELECT DISTINCT ON (u, room) u, 'r' || floor(random() * %(rooms)s)::int AS room,
             floor(random() * %(unread_max)s)::int AS behind
      FROM generate_series(1, %(bench_users)s) AS u, generate_series(1, %(per_user)s) AS k) AS c
ON CONFLICT DO NOTHING;
"""
WORD = "'w' || floor(%(vocab)s * random() ^ 3)::int"


def fill(url: str, args) -> None:
    started = time.monotonic()
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SET maintenance_work_mem = '512MB'")
        cur.execute(
            FILL.format(words=", ".join([WORD] * 8)),
            {
                "rooms": ROOMS,
                "users": USERS,
                "messages": args.messages,
                "vocab": VOCAB,
                "unread_max": UNREAD_MAX,
                "bench_users": BENCH_USERS,
                "per_user": ROOMS_PER_USER,
            },
        )
        filled = time.monotonic()
        # What autovacuum does to an insert-only table in production: the visibility map
        # that index-only scans need, and the statistics.
        cur.execute("VACUUM ANALYZE messages")
        cur.execute("VACUUM ANALYZE")
    conn.close()
    vacuumed = time.monotonic() - filled
    print(f"filled {args.messages:,} messages in {filled - started:.0f} s, vacuumed in {vacuumed:.0f} s")


def timed(runs: int, step) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        step()
        times.append((time.perf_counter() - started) * 1000)
    return times


def report(name: str, times: list[float]) -> None:
    times = sorted(times)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"{name:<28} p50 {statistics.median(times):7.2f} ms   p99 {p99:7.2f} ms   max {times[-1]:7.2f} ms")


def measure(url: str, runs: int) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SET TIME ZONE 'UTC'")
    store.SESSION.prepare(cur)
    rng = random.Random(7)

    def welcome() -> None:
        user = rng.randint(1, BENCH_USERS)
        session = store.open_session(cur, Identity(user, f"u{user}"))
        partners = store.conversations_of(cur, user, WELCOME_LIST_MAX)
        listed = sorted(session.rooms, key=lambda r: (-r.last_id, r.room))[:WELCOME_LIST_MAX]
        rooms = read_state.room_counts(cur, user, session.username, {r.room: r.last_read_id for r in listed})
        read_state.dm_counts(cur, user, session.username, [p["userId"] for p in partners])
        assert len(rooms) >= ROOMS_PER_USER * 0.9

    def searcher(low: int, high: int):
        def step() -> None:
            user = rng.randint(1, BENCH_USERS)
            search.search(cur, user, f"w{rng.randint(low, high)}", None, None, None, 20)

        return step

    def history() -> None:
        store.room_history(cur, f"r{rng.randrange(ROOMS)}", 50)

    report("welcome (50 rooms, counts)", timed(runs, welcome))
    # With the cubic skew, word k is in a share of about (k+1)^(1/3) - k^(1/3) of the draws.
    report("search: common word", timed(runs, searcher(0, 2)))
    report("search: ~1 in 1,000 messages", timed(runs, searcher(200, 400)))
    report("search: rare word", timed(runs, searcher(15_000, 19_999)))
    report("room_history (limit 50)", timed(runs, history))
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--keep", metavar="NAME", help="keep the database under this name (reused if it exists)")
    args = parser.parse_args()
    name = args.keep or "chat_bench_read_search"
    url = db_url(name)
    try:
        exists = bool(args.keep) and _exists(url)
        if not exists:
            create_db(name, f"{ROOT}/schema.sql")
            fill(url, args)
        measure(url, args.runs)
    finally:
        if not args.keep:
            drop_db(name)


def _exists(url: str) -> bool:
    try:
        psycopg2.connect(url).close()
        return True
    except psycopg2.OperationalError:
        return False


if __name__ == "__main__":
    main()
