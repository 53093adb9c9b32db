"""Each bus alone: how fast PostgreSQL NOTIFY and Redis pub/sub carry the payloads app/bus.py sends.

Publishers and listeners are processes of their own (no GIL between them), on a database
of their own (created and dropped, as run.py does it) or on Redis channel
`chat_bench_bus:<pid>`. The payload is what a worker announces for a stored room message
(app.bus.message_payload: origin prefix, seq and the wire `data` with a clientId, about
300 bytes), with the send time in its content.

Two measurements per bus and shape (publishers x listeners x payloads per round trip):

  flat out   every publisher sends as fast as it can for --seconds; reported: payloads
             published/s, delivered/s at each listener (all of them must have all), and
             the CPU the bus's own server spent per payload published (the PostgreSQL
             backends of the publishers and listeners, or redis-server) read from /proc.
  paced      publishers together at --rate payloads/s; delivery latency p50/p99/max
             at the listeners (one machine, one clock).

For NOTIFY, "payloads per round trip" is NOTIFYs per transaction: the group commit
announces every message of its batch inside its own transaction (store.BATCH), so a
batch of 10 is one commit carrying 10 NOTIFYs. For Redis it is the publisher's pipeline
(app/bus.py sends up to 256 per round trip, whatever has queued).

    .venv/bin/python bench/bus.py                    # both buses, the default shapes
    .venv/bin/python bench/bus.py --bus redis --seconds 5

Then, for Redis, its own CPU per publish against the number of subscribers (raw sockets
that read and discard, so that Python's parsing does not limit it): what one Redis
process spends per message for N workers listening on one channel.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import select
import sys
import time

import psycopg2
import redis
from harness.paths import ROOT
from harness.pg import create_db, db_url, drop_db, psql
from harness.procs import proc_cpu_s

sys.path.insert(0, ROOT)

from app.bus import message_payload  # noqa: E402
from app.messages import StoredMessage, message_data  # noqa: E402

CHANNEL = "chat_bench_bus"
# (publishers, listeners, payloads per transaction or pipeline)
SHAPES = [(1, 1, 1), (1, 1, 10), (4, 1, 1), (4, 1, 10), (4, 2, 10), (4, 4, 10)]


def payload(seq: int) -> str:
    """What a worker announces for one stored room message, its send time in the content."""
    sent = f"{time.time():.6f}"
    data = message_data(
        1000 + seq,
        100123,
        "u100123",
        f"b1 {sent} s7 lorem ipsum dolor sit amet consectetur",
        "2026-12-06T00:00:00.123456Z",
        "bench42",
        None,
        f"s7-42-3-{seq}",
    )
    return message_payload("d41d8cd98f00b204/worker-1-abcdef", StoredMessage(id=1000 + seq, seq=seq, data=data))


def sent_at(text: str) -> float:
    return float(text.split('"content":"b1 ', 1)[1].split(" ", 1)[0])


# ------------------------------------------------------------------ publishers
def pace(rate: float | None, start: float, done: int) -> None:
    """Sleep until the moment payload number `done` is due at `rate`/s (no pacing when None)."""
    if rate:
        delay = start + done / rate - time.time()
        if delay > 0:
            time.sleep(delay)


def pg_publisher(url: str, per: int, seconds: float, rate: float | None, out) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    backend = conn.get_backend_pid()
    cpu0 = proc_cpu_s(backend)
    n, start = 0, time.time()
    while time.time() - start < seconds:
        pace(rate, start, n)
        # One transaction that writes a row and NOTIFYs `per` payloads, as a group commit
        # stores its batch and announces it: the commit waits for its WAL flush, and (the
        # point of measuring) holds PostgreSQL's NOTIFY lock meanwhile.
        batch = [payload(n + i) for i in range(per)]
        cur.execute(
            "WITH w AS (INSERT INTO bench_bus_rows VALUES (1)) SELECT pg_notify(%s, p) FROM unnest(%s::text[]) p",
            (CHANNEL, batch),
        )
        n += per
    out.put(("pub", n, time.time() - start, proc_cpu_s(backend) - cpu0))
    conn.close()


def redis_publisher(url: str, channel: str, per: int, seconds: float, rate: float | None, out) -> None:
    client = redis.Redis.from_url(url)
    n, start = 0, time.time()
    while time.time() - start < seconds:
        pace(rate, start, n)
        if per == 1:
            client.publish(channel, payload(n))
        else:
            pipe = client.pipeline(transaction=False)
            for i in range(per):
                pipe.publish(channel, payload(n + i))
            pipe.execute()
        n += per
    out.put(("pub", n, time.time() - start, 0.0))


# ------------------------------------------------------------------ listeners
def pg_listener(url: str, ready, stop_after: float, out) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    conn.cursor().execute(f"LISTEN {CHANNEL}")
    backend = conn.get_backend_pid()
    cpu0, own0 = proc_cpu_s(backend), time.process_time()
    ready.set()
    lat, n, last = [], 0, time.time()
    while time.time() - last < stop_after:
        if select.select([conn], [], [], 0.2)[0]:
            conn.poll()
            now = time.time()
            for note in conn.notifies:
                lat.append(now - sent_at(note.payload))
            n += len(conn.notifies)
            if conn.notifies:
                last = now
            conn.notifies.clear()
    out.put(("sub", n, lat, proc_cpu_s(backend) - cpu0, time.process_time() - own0))


def redis_listener(url: str, channel: str, ready, stop_after: float, out) -> None:
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    while pubsub.get_message(timeout=1.0) is None and not pubsub.subscribed:
        pass
    ready.set()
    own0 = time.process_time()
    lat, n, last = [], 0, time.time()
    while time.time() - last < stop_after:
        item = pubsub.get_message(timeout=0.2)
        if item and item["type"] == "message":
            now = time.time()
            lat.append(now - sent_at(item["data"].decode()))
            n += 1
            last = now
    out.put(("sub", n, lat, 0.0, time.process_time() - own0))


# ------------------------------------------------------------------ the bus's own CPU
def redis_server_pid() -> int | None:
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip() == "redis-server":
                        return int(d)
            except OSError:
                pass
    return None


def percentile(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100 * len(xs))) - 1))]


def run_shape(bus: str, target: str, shape: tuple[int, int, int], seconds: float, rate: float | None) -> dict:
    """One measurement: listeners up, publishers for `seconds`, listeners drained."""
    pubs, subs, per = shape
    out, ready = mp.Queue(), [mp.Event() for _ in range(subs)]
    channel = f"{CHANNEL}:{os.getpid()}"
    if bus == "postgres":
        listeners = [mp.Process(target=pg_listener, args=(target, ready[i], 2.0, out)) for i in range(subs)]
    else:
        listeners = [mp.Process(target=redis_listener, args=(target, channel, ready[i], 2.0, out)) for i in range(subs)]
    for p in listeners:
        p.start()
    for e in ready:
        e.wait(10)
    each = None if rate is None else rate / pubs
    if bus == "postgres":
        publishers = [mp.Process(target=pg_publisher, args=(target, per, seconds, each, out)) for _ in range(pubs)]
    else:
        publishers = [
            mp.Process(target=redis_publisher, args=(target, channel, per, seconds, each, out)) for _ in range(pubs)
        ]
        server = redis_server_pid()
        before = proc_cpu_s(server) if server else 0.0
    for p in publishers:
        p.start()
    results = [out.get(timeout=seconds + 120) for _ in range(pubs + subs)]
    for p in publishers + listeners:
        p.join(10)
    if bus == "postgres":  # each publisher and listener read its backend's CPU
        server_cpu = sum(r[3] for r in results)
    else:
        server_cpu = (proc_cpu_s(server) - before) if server else 0.0
    published = sum(r[1] for r in results if r[0] == "pub")
    wall = max(r[2] for r in results if r[0] == "pub")
    got = [r[1] for r in results if r[0] == "sub"]
    lat = [x for r in results if r[0] == "sub" for x in r[2]]
    listener_cpu = sum(r[4] for r in results if r[0] == "sub")
    return {
        "published": published,
        "pub_per_s": published / wall,
        "delivered_min": min(got),
        "deliv_per_s": min(got) / wall,
        "server_us_per_payload": 1e6 * max(0.0, server_cpu) / max(1, published),
        # what reading a payload costs a listening process (psycopg2 or redis-py): every
        # worker pays it for every payload on the channel
        "listener_us_per_payload": 1e6 * listener_cpu / max(1, sum(got)),
        "p50_ms": 1e3 * (percentile(lat, 50) or 0),
        "p99_ms": 1e3 * (percentile(lat, 99) or 0),
        "max_ms": 1e3 * (max(lat) if lat else 0),
    }


def redis_fanout(url: str, subscribers: int, payloads: int = 100_000) -> float:
    """redis-server's CPU per publish with `subscribers` raw-socket subscribers that read and discard.

    Pipelined in rounds of 2,500, as app/bus.py pipelines what queued: Redis's own cost,
    without a Python subscriber's parsing (which the table above has as listener CPU).
    """
    import socket
    import threading

    channel = f"{CHANNEL}:fan:{os.getpid()}"
    stop = threading.Event()
    command = f"*2\r\n$9\r\nSUBSCRIBE\r\n${len(channel)}\r\n{channel}\r\n".encode()
    address = redis.Redis.from_url(url).connection_pool.connection_kwargs
    host, port = address.get("host", "127.0.0.1"), address.get("port", 6379)

    def drain() -> None:
        with socket.create_connection((host, port)) as sock:
            sock.sendall(command)
            sock.settimeout(0.2)
            while not stop.is_set():
                try:
                    if not sock.recv(1 << 20):
                        return
                except TimeoutError:
                    pass

    readers = [threading.Thread(target=drain) for _ in range(subscribers)]
    for t in readers:
        t.start()
    time.sleep(0.5)
    client, server = redis.Redis.from_url(url), redis_server_pid()
    text = payload(1)
    before = proc_cpu_s(server)
    for _ in range(payloads // 2500):
        pipe = client.pipeline(transaction=False)
        for _ in range(2500):
            pipe.publish(channel, text)
        pipe.execute()
    time.sleep(0.3)
    cpu = proc_cpu_s(server) - before
    stop.set()
    for t in readers:
        t.join()
    return 1e6 * cpu / payloads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bus", default="postgres,redis", help="comma list of postgres,redis")
    parser.add_argument("--seconds", type=float, default=5.0, help="publishing time of each measurement")
    parser.add_argument("--rate", type=float, default=2000.0, help="paced: payloads/s of all publishers together")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    options = parser.parse_args()
    print(f"payload: {len(payload(1).encode())} bytes; {os.cpu_count()} CPUs; {options.seconds:g} s each\n")
    print(
        "| bus | publishers | listeners | per round trip | published/s (flat out) | delivered/s at each listener | "
        f"bus server CPU us/payload | listener CPU us/payload | p50 / p99 / max ms at {options.rate:,.0f}/s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for bus in options.bus.split(","):
        name = f"bench_bus_{os.getpid()}"
        if bus == "postgres":
            create_db(name, os.path.join(ROOT, "schema.sql"))
            psql(name, sql="CREATE TABLE bench_bus_rows (x int)")
            target = db_url(name)
        else:
            target = options.redis_url
        try:
            for shape in SHAPES:
                flat = run_shape(bus, target, shape, options.seconds, None)
                paced = run_shape(bus, target, shape, options.seconds, options.rate)
                print(
                    f"| {bus} | {shape[0]} | {shape[1]} | {shape[2]} | {flat['pub_per_s']:,.0f} | "
                    f"{flat['deliv_per_s']:,.0f} | {flat['server_us_per_payload']:.0f} | "
                    f"{flat['listener_us_per_payload']:.0f} | "
                    f"{paced['p50_ms']:.1f} / {paced['p99_ms']:.1f} / {paced['max_ms']:.1f} |",
                    flush=True,
                )
        finally:
            if bus == "postgres":
                drop_db(name)
    if "redis" in options.bus.split(",") and redis_server_pid():
        print("\n| subscribers | redis-server CPU us per publish (pipelined, subscribers that only read) |")
        print("|---:|---:|")
        for subscribers in (0, 1, 4, 8, 16, 32):
            print(f"| {subscribers} | {redis_fanout(options.redis_url, subscribers):.2f} |", flush=True)


if __name__ == "__main__":
    main()
