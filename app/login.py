"""Standalone sign-in: POST /api/login checks users.password and returns a JWT.

Where another backend issues the tokens, switch it off with LOGIN_ENABLED=false.
Wrong credentials always get the same 401; attempts are rate limited (app/throttle.py).
"""

from __future__ import annotations

import gevent
from flask import Blueprint, Response, abort, current_app, jsonify, request
from gevent.lock import Semaphore
from werkzeug.security import check_password_hash, generate_password_hash

from .errors import Unavailable
from .runtime import get_runtime
from .throttle import Throttle, TooManyAttempts
from .tokens import issue_token

bp = Blueprint("login", __name__)

# Password checks running at once. Each takes a thread of gevent's pool (which its DNS
# resolver shares) and a core for ~140 ms: a flood of logins waits here, and leaves the
# event loop the CPU it needs to serve the WebSockets.
HASHES_AT_ONCE = 2
# How long a login waits for one of them before it is answered 503 (retry later): under
# a flood, a queue without end would hold every request (and its greenlet) for good.
HASH_WAIT_SECONDS = 10.0

# Checked against when the user does not exist, so that both cases take as long.
_DUMMY_HASH = generate_password_hash("not a password")

# Attempts by client address and by username: three at once, then spaced 0.25 s, 0.5 s,
# ... up to 5 s apart per key; one that would wait longer is answered 429.
throttle = Throttle()
_hash_slots = Semaphore(HASHES_AT_ONCE)


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
    address_key, user_key = f"addr:{request.remote_addr}", f"user:{username.lower()}"
    try:
        gevent.sleep(throttle.reserve([address_key, user_key]))
    except TooManyAttempts as exc:
        response = jsonify(error=f"too many sign-in attempts: retry in {exc.retry_after} s")
        response.headers["Retry-After"] = str(exc.retry_after)
        return response, 429
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
    throttle.forget(user_key)
    throttle.uncount(address_key)  # shared by everyone behind it: a success just is no failure
    user_id, name = row[0], row[1]
    token = issue_token(config["JWT_SECRET"], user_id, name, config["TOKEN_TTL_SECONDS"])
    return jsonify(token=token, userId=user_id, username=name), 200
