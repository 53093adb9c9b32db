"""Print the time of each WAL segment PostgreSQL creates, to line up with delivery stalls.

A segment PostgreSQL recycles is an old file renamed (its inode stays); one it creates is
a new file, zero-filled and fsynced while every commit waits for the WAL (issue #22's
stalls, bench/README.md). This polls the WAL directory and prints the new inodes, with
the time, for `--seconds`; run it beside a benchmark and compare with the seconds the
loadgen reports as slow (`worstMsBySecond`, whose second 0 is `sendStartEpochMs`) and
with PostgreSQL's log of slow statements (`log_min_duration_statement`).

Reads the data directory, so it runs as root or as the postgres user:
    python3 bench/wal_segments.py --seconds 90 [--pg-wal /var/lib/postgresql/15/main/pg_wal]
Standard library only.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import time

# How often the directory is listed: a segment lasts about a second at the busiest steps.
POLL_SECONDS = 0.05
# A WAL segment's file name: timeline, log and segment, 8 hex digits each.
SEGMENT_NAME_LENGTH = 24


def default_pg_wal() -> str:
    """The pg_wal directory of the PostgreSQL on 127.0.0.1 (asked with psql)."""
    data = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qAtc", "SHOW data_directory"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return os.path.join(data, "pg_wal")


def segments(pg_wal: str) -> dict[int, str]:
    """inode -> file name of each WAL segment in the directory."""
    return {
        entry.inode(): entry.name
        for entry in os.scandir(pg_wal)
        if entry.is_file() and len(entry.name) == SEGMENT_NAME_LENGTH
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=90.0)
    ap.add_argument("--pg-wal", help="the WAL directory (default: asked of the local PostgreSQL)")
    opts = ap.parse_args()
    pg_wal = opts.pg_wal or default_pg_wal()
    seen = segments(pg_wal)
    print(f"watching {pg_wal}: {len(seen)} segments now", flush=True)
    end = time.monotonic() + opts.seconds
    created = 0
    while time.monotonic() < end:
        time.sleep(POLL_SECONDS)
        now = segments(pg_wal)
        for inode, name in sorted(now.items(), key=lambda item: item[1]):
            if inode not in seen:
                created += 1
                stamp = datetime.datetime.now(datetime.UTC).strftime("%H:%M:%S.%f")[:-3]
                print(f"{stamp} created {name}", flush=True)
        seen = now
    print(f"{created} segments created in {opts.seconds:g} s; {len(seen)} in the directory now")


if __name__ == "__main__":
    main()
