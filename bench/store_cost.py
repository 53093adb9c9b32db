"""What one group commit costs: PostgreSQL CPU per stored message and client CPU per batch.

Runs the project's batch statements (app/store.py) on one connection, back to back, in a
database of its own (created, seeded with rooms and users, dropped at the end, as run.py
does it), for
batches of 1, 10 and 40 room messages, with and without NOTIFY. PostgreSQL's CPU is read
from /proc for the connection's backend, so it needs PostgreSQL on this machine.

    .venv/bin/python bench/store_cost.py               # as the server runs them
    .venv/bin/python bench/store_cost.py --plans auto  # prepared, PostgreSQL's own plan choice
    .venv/bin/python bench/store_cost.py --plans unprepared  # the whole query text each time
    .venv/bin/python bench/store_cost.py --ceiling  # 1-8 lanes at once: PostgreSQL's group-commit ceiling

One connection does not show what concurrency adds (two lanes updating `rooms`, see
bench/README.md item 9); the chat scenario of run.py does.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time

import psycopg2
from harness.paths import ROOT
from harness.pg import create_db, db_url, drop_db  # bench/harness: run.py's database handling
from harness.procs import proc_cpu_s  # and its /proc reading

sys.path.insert(0, ROOT)

from app import store  # noqa: E402

ROOMS = 350  # about as many as the chat scenario's saturation steps have
USERS = 1000
SEEDED_MESSAGES = 200_000  # so that the indexes have depth, as in a live database
# The batch statements written out in full (each run planned anew), their parameters typed.
INLINE_STATEMENTS = {name: store.BATCH.inline(name) for name in store.BATCH.statements}


def random_drafts(rnd: random.Random, size: int) -> list[store.Draft]:
    """`size` messages of the benchmark's shape, from random users to random rooms."""
    return [
        store.Draft(
            from_user=rnd.randint(1, USERS),
            username="u",
            content="b1 run room member 12 1733000000000 lorem ipsum dolor sit amet",
            room=f"r{rnd.randrange(ROOMS)}",
        )
        for _ in range(size)
    ]


def backend_cpu_s(conn) -> float:
    return proc_cpu_s(conn.get_backend_pid())


def seed(url: str) -> None:
    """Rooms, users and messages in a database that has the schema."""
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO rooms (name) SELECT 'r' || g FROM generate_series(0, %s) g", (ROOMS - 1,))
        cur.execute("INSERT INTO users (id, username) SELECT g, 'u' || g FROM generate_series(1, %s) g", (USERS,))
        cur.execute(
            """INSERT INTO messages (from_user, room, content, seq)
               SELECT g %% %s + 1, 'r' || g %% %s, 'seeded', g FROM generate_series(1, %s) g""",
            (USERS, ROOMS, SEEDED_MESSAGES),
        )
    conn.commit()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    conn.close()


def measure(url: str, size: int, notify: str | None, plans: str) -> str:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        store.prepare_batch_statements(cur)
        if plans != "generic":
            cur.execute("RESET plan_cache_mode")
    rnd = random.Random(size)

    def drafts() -> list[store.Draft]:
        return random_drafts(rnd, size)

    statements = INLINE_STATEMENTS if plans == "unprepared" else store.BATCH.execute
    batches = max(200, 4000 // size)
    with conn.cursor() as cur:
        for _ in range(50):  # warm: plans made, caches filled
            cur.execute(*store.batch_query(drafts(), notify, "bench", statements))
        work = [store.batch_query(drafts(), notify, "bench", statements) for _ in range(batches)]
        pg_before, cpu_before, wall_before = backend_cpu_s(conn), time.process_time(), time.perf_counter()
        for query, params in work:
            cur.execute(query, params)
            cur.fetchall()
        pg = backend_cpu_s(conn) - pg_before
        client = time.process_time() - cpu_before
        wall = time.perf_counter() - wall_before
    conn.close()
    messages = batches * size
    return (
        f"| {size:>5} | {'yes' if notify else 'no':>6} | {pg / messages * 1e6:>14.0f} | "
        f"{client / batches * 1e6:>16.0f} | {wall / batches * 1e3:>12.2f} |"
    )


def ceiling(url: str, lanes: int, size: int, notify: str | None, seconds: float, after: bool = False) -> str:
    """The group-commit ceiling: `lanes` connections committing batches of `size` back to back.

    As many lanes as the workers of a deployment hold together (COMMIT_PIPELINES each),
    every one in its own thread (psycopg2 lets go of the GIL while PostgreSQL works):
    messages/s and commits/s that PostgreSQL takes, and its CPU per message. With `after`,
    the batch is stored without NOTIFY and its payloads NOTIFYed in a second statement,
    a transaction of its own: what moving the announcement out of the commit would give.
    """
    conns = []
    for _ in range(lanes):
        conn = psycopg2.connect(url)
        conn.autocommit = True
        with conn.cursor() as cur:
            store.prepare_batch_statements(cur)
        conns.append(conn)
    done = [0] * lanes
    stop = threading.Event()

    def lane(i: int) -> None:
        rnd = random.Random(i)
        with conns[i].cursor() as cur:
            while not stop.is_set():
                drafts = random_drafts(rnd, size)
                cur.execute(*store.batch_query(drafts, None if after else notify, "bench"))
                rows = cur.fetchall()
                if after and notify:
                    # announced after the commit, in a transaction of its own that writes
                    # nothing: it takes the NOTIFY lock, but flushes no WAL while holding it
                    payloads = [f'bench|{{"k":"m","s":{row[3]},"id":{row[2]}}}' for row in rows]
                    cur.execute("SELECT pg_notify(%s, p) FROM unnest(%s::text[]) p", (notify, payloads))
                done[i] += 1

    pg_before = sum(backend_cpu_s(c) for c in conns)
    threads = [threading.Thread(target=lane, args=(i,)) for i in range(lanes)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    pg = sum(backend_cpu_s(c) for c in conns) - pg_before
    for c in conns:
        c.close()
    commits = sum(done)  # batches stored (with NOTIFY after: each one more transaction that writes nothing)
    announced = ("after" if after else "yes") if notify else "no"
    return (
        f"| {lanes:>5} | {size:>5} | {announced:>6} | {commits / wall:>9,.0f} | "
        f"{commits * size / wall:>10,.0f} | {pg / max(1, commits * size) * 1e6:>13.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--plans",
        choices=("generic", "auto", "unprepared"),
        default="generic",
        help="generic: as the server prepares them; auto: prepared, PostgreSQL chooses (custom plans); "
        "unprepared: the whole query, planned each run",
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="the group-commit ceiling instead: 1-8 lanes committing back to back, batches of 1, 10 and 40; "
        "without NOTIFY, with NOTIFY inside the commit (as the server does), and NOTIFY after it",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="--ceiling: seconds per measurement")
    options = parser.parse_args()
    name = f"bench_store_cost_{os.getpid()}"
    create_db(name, os.path.join(ROOT, "schema.sql"))
    url = db_url(name)
    try:
        seed(url)
        if options.ceiling:
            print("| lanes | batch | NOTIFY | commits/s | messages/s | PG CPU us/msg |")
            print("|------:|------:|-------:|----------:|-----------:|--------------:|")
            for size in (1, 10, 40):
                for lanes in (1, 2, 4, 8):
                    for notify, after in ((None, False), ("chat_bench", False), ("chat_bench", True)):
                        print(ceiling(url, lanes, size, notify, options.seconds, after), flush=True)
            return
        print(f"plans: {options.plans}\n")
        print("| batch | NOTIFY | PG CPU us/msg | client CPU us/batch | wall ms/batch |")
        print("|------:|-------:|--------------:|--------------------:|--------------:|")
        for size in (1, 10, 40):
            for notify in (None, "chat_bench"):
                print(measure(url, size, notify, options.plans), flush=True)
    finally:
        drop_db(name)


if __name__ == "__main__":
    main()
