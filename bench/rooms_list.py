"""How long the `rooms` query takes with a million rooms (issue #19, item 4).

Creates a database of its own (dropped at the end, as run.py does it), inserts ROOMS
rooms and a live node with ONLINE users spread over some of them (room_presence rows, and
the rooms' counts of room_online as joins keep them), then runs the query of app/store.py's
list_rooms RUNS times and prints its p50, p99 and max. With --previous it also times the
two queries it replaced: counting room_presence, and a GROUP BY over every room.

    .venv/bin/python bench/rooms_list.py
    .venv/bin/python bench/rooms_list.py --rooms 1000000 --online 20000 --runs 500 --previous
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import psycopg2
from harness.paths import ROOT
from harness.pg import create_db, db_url, drop_db  # bench/harness: run.py's database handling

sys.path.insert(0, ROOT)

from app import store  # noqa: E402

ALIVE_SECONDS = 10.0  # NODE_TIMEOUT_SECONDS's default
LIST_MAX = 1000  # ROOMS_LIST_MAX's default
# The queries before this one, for comparison: counting the presence rows of live nodes...
COUNTING = f"""
WITH online AS (
    SELECT p.room, count(DISTINCT p.user_id) AS online FROM room_presence p
    WHERE p.node_id IN (SELECT node_id FROM chat_nodes WHERE heartbeat_at > now() - make_interval(secs => %(alive)s))
    GROUP BY p.room
), crowded AS (
    SELECT r.name, r.description, o.online FROM online o JOIN rooms r ON r.name = o.room AND r.{store.PUBLIC}
    ORDER BY o.online DESC, r.name LIMIT %(most)s
), quiet AS (
    SELECT r.name, r.description, 0::bigint AS online FROM rooms r
    WHERE r.{store.PUBLIC} AND NOT EXISTS (SELECT 1 FROM crowded c WHERE c.name = r.name)
    ORDER BY r.name LIMIT %(most)s
)
SELECT name, description, online FROM (
    SELECT * FROM crowded UNION ALL SELECT * FROM quiet ORDER BY online DESC, name LIMIT %(most)s
) listed ORDER BY name"""
# ... and, before that, grouping every room with its presence rows.
PREVIOUS = f"""SELECT name, description, online FROM (
       SELECT r.name, r.description, COUNT(DISTINCT p.user_id) AS online
       FROM rooms r
       LEFT JOIN room_presence p ON p.room = r.name
            AND p.node_id IN (SELECT node_id FROM chat_nodes
                              WHERE heartbeat_at > now() - make_interval(secs => %(alive)s))
       WHERE r.{store.PUBLIC}
       GROUP BY r.name, r.description ORDER BY online DESC, r.name LIMIT %(most)s
   ) listed ORDER BY name"""


def seed(url: str, rooms: int, online: int, crowded_rooms: int) -> None:
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO rooms (name) SELECT 'room-' || g FROM generate_series(1, %s) g", (rooms,))
        cur.execute("INSERT INTO chat_nodes (node_id) VALUES ('bench-node')")
        # ONLINE users, each in one of the first `crowded_rooms` rooms (some crowded, most not)
        cur.execute(
            """INSERT INTO room_presence (room, user_id, node_id, username)
               SELECT 'room-' || (1 + (g::bigint * g) %% %s), g, 'bench-node', 'u' || g
               FROM generate_series(1, %s) g""",
            (crowded_rooms, online),
        )
        cur.execute(
            """INSERT INTO room_online (room, online)
               SELECT room, count(DISTINCT user_id) FROM room_presence GROUP BY room"""
        )
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    conn.close()


def timings(url: str, query: str, runs: int) -> list[float]:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    params = {"alive": ALIVE_SECONDS, "most": LIST_MAX}
    spent = []
    with conn.cursor() as cur:
        cur.execute("UPDATE chat_nodes SET heartbeat_at = now()")  # alive for the whole run
        for _ in range(runs):
            started = time.perf_counter()
            cur.execute(query, params)
            listed = cur.fetchall()
            spent.append((time.perf_counter() - started) * 1000)
        assert len(listed) == LIST_MAX, len(listed)
    conn.close()
    return spent


def report(name: str, spent: list[float]) -> None:
    spent = sorted(spent)
    p99 = spent[min(len(spent) - 1, round(len(spent) * 0.99))]
    print(f"{name}: runs {len(spent)}, p50 {statistics.median(spent):.2f} ms, p99 {p99:.2f} ms, max {spent[-1]:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=1_000_000)
    parser.add_argument("--online", type=int, default=20_000, help="users online (room_presence rows)")
    parser.add_argument("--crowded-rooms", type=int, default=5_000, help="rooms the online users are spread over")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--previous", action="store_true", help="also time the queries this one replaced")
    args = parser.parse_args()
    name = f"bench_rooms_{os.getpid()}"
    create_db(name, os.path.join(ROOT, "schema.sql"))
    try:
        url = db_url(name)
        seed(url, args.rooms, args.online, args.crowded_rooms)
        print(f"{args.rooms} rooms, {args.online} users online in {args.crowded_rooms} of them, list of {LIST_MAX}")
        report("rooms query", timings(url, store.LIST_ROOMS, args.runs))
        if args.previous:
            report("counting room_presence", timings(url, COUNTING, args.runs))
            report("grouping every room", timings(url, PREVIOUS, max(5, args.runs // 50)))
    finally:
        drop_db(name)


if __name__ == "__main__":
    main()
