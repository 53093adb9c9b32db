"""Standalone sign-in: POST /api/login checks users.password and returns a JWT.

Where another backend issues the tokens, switch it off with LOGIN_ENABLED=false.
Wrong credentials always get the same 401, and repeated failures are slowed down.
"""

from __future__ import annotations

import time

import gevent
from flask import Blueprint, Response, abort, current_app, jsonify, request
from gevent.lock import Semaphore
from werkzeug.security import check_password_hash, generate_password_hash

from .errors import Unavailable
from .runtime import get_runtime
from .tokens import issue_token

bp = Blueprint("login", __name__)

# Failures before the answers start to slow down, and the slowest answer.
FREE_FAILURES = 3
MAX_DELAY_SECONDS = 5.0
# A key's attempts are forgotten this long after its last one.
FAILURE_MEMORY_SECONDS = 15 * 60
# Keys remembered at most: usernames are whatever clients send, so a spray of them would
# grow the table without bound. The least recently tried go first: the counters of an
# attack in progress, touched at each of its attempts, stay.
MAX_TRACKED_KEYS = 10_000
# Password checks running at once. Each takes a thread of gevent's pool (which its DNS
# resolver shares) and a core for ~140 ms: a flood of logins waits here, and leaves the
# event loop the CPU it needs to serve the WebSockets.
HASHES_AT_ONCE = 2
# How long a login waits for one of them before it is answered 503 (retry later): under
# a flood, a queue without end would hold every request (and its greenlet) for good.
HASH_WAIT_SECONDS = 10.0

# Checked against when the user does not exist, so that both cases take as long.
_DUMMY_HASH = generate_password_hash("not a password")

# (client address or username) -> (attempts not followed by a success, time of the last
# one), least recently tried first: each attempt moves its keys to the end.
attempts_by_key: dict[str, tuple[int, float]] = {}
_hash_slots = Semaphore(HASHES_AT_ONCE)


def _count_attempt(keys: list[str]) -> float:
    """Count an attempt against each of its keys; return how long it must wait first.

    It is counted before the password is checked, so that attempts running at once see
    each other: counted after, they all read the same count and none was slowed down.
    """
    now = time.monotonic()
    while attempts_by_key:
        oldest = next(iter(attempts_by_key))
        if now - attempts_by_key[oldest][1] < FAILURE_MEMORY_SECONDS:
            break
        del attempts_by_key[oldest]
    earlier = 0
    for key in keys:
        count, _ = attempts_by_key.pop(key, (0, now))
        earlier = max(earlier, count)
        attempts_by_key[key] = (count + 1, now)
    while len(attempts_by_key) > MAX_TRACKED_KEYS:
        del attempts_by_key[next(iter(attempts_by_key))]
    if earlier < FREE_FAILURES:
        return 0.0
    # The exponent is capped: 2 ** n overflows a float past n = 1023 (a long attack).
    return min(MAX_DELAY_SECONDS, 0.25 * 2 ** min(earlier - FREE_FAILURES, 10))


def _check_password(stored_hash: str, password: str) -> bool:
    """check_password_hash in a thread of gevent's pool, at most HASHES_AT_ONCE at a time.

    scrypt holds a core for ~140 ms: in the event loop's thread that froze every WebSocket
    of the worker. hashlib.scrypt releases the GIL, so the loop runs on meanwhile.
    """
    if not _hash_slots.acquire(timeout=HASH_WAIT_SECONDS):
        raise Unavailable("too many sign-ins at once, retry later")
    try:
        return gevent.get_hub().threadpool.apply(check_password_hash, (stored_hash, password))
    finally:
        _hash_slots.release()


@bp.post("/api/login")
def login() -> tuple[Response, int]:
    """A token for the right username and password; the same 401 for any wrong pair."""
    config = current_app.config
    if not config["LOGIN_ENABLED"]:
        abort(404)
    body = request.get_json(silent=True) or {}
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        return jsonify(error="username and password are required"), 400
    keys = [f"addr:{request.remote_addr}", f"user:{username.lower()}"]
    gevent.sleep(_count_attempt(keys))
    try:
        with get_runtime(current_app).pool.autocommit() as cur:
            cur.execute("SELECT id, username, password FROM users WHERE username = %s", (username,))
            row = cur.fetchone()
    except Unavailable as exc:
        return jsonify(error=exc.message), 503
    stored_hash = row[2] if row and row[2] else _DUMMY_HASH
    try:
        matches = _check_password(stored_hash, password)
    except Unavailable as exc:
        return jsonify(error=exc.message), 503
    if not (matches and row and row[2]):
        return jsonify(error="invalid credentials"), 401
    for key in keys:
        attempts_by_key.pop(key, None)
    user_id, name = row[0], row[1]
    token = issue_token(config["JWT_SECRET"], user_id, name, config["TOKEN_TTL_SECONDS"])
    return jsonify(token=token, userId=user_id, username=name), 200
