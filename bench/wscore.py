"""Micro-benchmark behind app/wscore.py (issue #18): the hand-written frame reader against
wsproto's sans-I/O Connection, on what a chat server reads.

    .venv/bin/python bench/wscore.py [--frames N]

Reports CPU µs per frame (one masked ~120-byte text frame per read, and 32 per read),
bytes per idle parser (tracemalloc, 10,000 of them) and handshakes per second (wsproto's
H11Handshake does the handshake either way, as simple-websocket does; with the
hand-written reader the core is made after it).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wsproto import ConnectionType  # noqa: E402
from wsproto.connection import Connection  # noqa: E402
from wsproto.events import AcceptConnection, Request, TextMessage  # noqa: E402
from wsproto.handshake import H11Handshake  # noqa: E402

from app.wscore import NEED_MORE, WebSocketCore  # noqa: E402

MAX_MESSAGE_BYTES = 65536
IDLE_PARSERS = 10_000
HANDSHAKES = 5_000


def client_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x81, 0x80 | len(payload))) + mask + masked


MESSAGE = json.dumps({"type": "message", "room": "general", "content": "hello there, how is everyone " * 2}).encode()


def ours(reads: list[bytes]) -> int:
    core = WebSocketCore(MAX_MESSAGE_BYTES)
    count = 0
    for data in reads:
        core.receive_data(data)
        while core.next_event() is not NEED_MORE:
            count += 1
    return count


def theirs(reads: list[bytes]) -> int:
    conn = Connection(ConnectionType.SERVER)
    count = 0
    for data in reads:
        conn.receive_data(data)
        for event in conn.events():
            if isinstance(event, TextMessage):
                count += 1
    return count


def cpu_per_frame(parse, frames: int, per_read: int) -> float:
    frame = client_frame(MESSAGE[:125])
    reads = [frame * per_read] * (frames // per_read)
    started = time.process_time()
    assert parse(reads) == frames
    return (time.process_time() - started) / frames * 1e6


def bytes_per_idle(make) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    parsers = [make() for _ in range(IDLE_PARSERS)]
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    size = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    del parsers
    return (size - 8 * IDLE_PARSERS) / IDLE_PARSERS  # less the list's own pointers


REQUEST = (
    b"GET /ws HTTP/1.1\r\nHost: chat\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def handshakes_per_second(then_core: bool) -> float:
    started = time.process_time()
    for _ in range(HANDSHAKES):
        handshake = H11Handshake(ConnectionType.SERVER)
        handshake.receive_data(REQUEST)
        assert isinstance(next(handshake.events()), Request)
        handshake.send(AcceptConnection())
        if then_core:
            WebSocketCore(MAX_MESSAGE_BYTES)
    return HANDSHAKES / (time.process_time() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64_000)
    args = parser.parse_args()
    rows = [
        ("CPU µs/frame, 1 frame per read", *(cpu_per_frame(p, args.frames, 1) for p in (ours, theirs))),
        ("CPU µs/frame, 32 frames per read", *(cpu_per_frame(p, args.frames, 32) for p in (ours, theirs))),
        (
            "bytes per idle parser",
            bytes_per_idle(lambda: WebSocketCore(MAX_MESSAGE_BYTES)),
            bytes_per_idle(lambda: Connection(ConnectionType.SERVER)),
        ),
        ("handshakes/s (H11Handshake + parser)", handshakes_per_second(True), handshakes_per_second(False)),
    ]
    print(f"{'':40} {'app.wscore':>12} {'wsproto':>12}")
    for name, mine, other in rows:
        print(f"{name:40} {mine:12.2f} {other:12.2f}")


if __name__ == "__main__":
    main()
