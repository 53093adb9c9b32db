"""Standalone sign-in: POST /api/login checks users.password and returns a JWT.

Where another backend issues the tokens, switch it off with LOGIN_ENABLED=false.
Wrong credentials always get the same 401; attempts are rate limited (app/throttle.py).
"""

from __future__ import annotations

import gevent
from flask import Blueprint, Response, abort, current_app, jsonify, request
from gevent.lock import Semaphore

from . import passwords
from .errors import ChatError, Unavailable
from .names import USERNAME_MAX_CHARS, is_valid_username
from .runtime import get_runtime
from .throttle import Throttle, TooManyAttempts, reserve_together
from .tokens import issue_token

bp = Blueprint("login", __name__)

# Password checks running at once. Each takes a thread of gevent's pool (which its DNS
# resolver shares) and a core for a noticeable time: a flood of logins waits here, and
# leaves the event loop the CPU it needs to serve the WebSockets.
HASHES_AT_ONCE = 2
# How long a login waits for one of them before it is answered 503 (retry later): under
# a flood, a queue without end would hold every request (and its greenlet) for good.
HASH_WAIT_SECONDS = 10.0

# Checked against when the user does not exist, so that both cases take as long.
_DUMMY_HASH = passwords.hash_password("not a password")

# Attempts per client address: an office behind one address signs in often, so ten at
# once, then spaced up to 1 s apart (a guesser's sustained pace from one address).
by_address = Throttle(free_attempts=10, first_delay_seconds=0.1, max_delay_seconds=1.0)
# Attempts on one username from one address: three at once, then spaced 0.25 s, 0.5 s,
# ... up to 5 s apart. Not per username alone: its refusals (429) would let anyone lock
# the user out by guessing from elsewhere.
by_account = Throttle()
_hash_slots = Semaphore(HASHES_AT_ONCE)


def _check_password(stored_hash: str, password: str) -> tuple[bool, str | None]:
    """passwords.check in a thread of gevent's pool, at most HASHES_AT_ONCE at a time.

    A hash holds a core for long (argon2id is slow on purpose): in the event loop's thread it
    would freeze every WebSocket of the worker. argon2 and hashlib.scrypt release the GIL.
    """
    if not _hash_slots.acquire(timeout=HASH_WAIT_SECONDS):
        raise Unavailable("too many sign-ins at once, retry later")
    try:
        return gevent.get_hub().threadpool.apply(passwords.check, (stored_hash, password))
    finally:
        _hash_slots.release()


def _replace_hash(user_id: int, old_hash: str, new_hash: str) -> None:
    """Store the stronger hash, unless the password was changed meanwhile.

    When the database is away, the next sign-in tries again.
    """
    try:
        with get_runtime(current_app).pool.autocommit() as cur:
            cur.execute("UPDATE users SET password = %s WHERE id = %s AND password = %s", (new_hash, user_id, old_hash))
    except ChatError:
        pass


@bp.after_request
def not_stored(response: Response) -> Response:
    """A token must not stay in a browser's or a proxy's cache."""
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/api/login")
def login() -> tuple[Response, int]:
    """A token for the right username and password; the same 401 for any wrong pair."""
    config = current_app.config
    if not config["LOGIN_ENABLED"]:
        abort(404)
    body = request.get_json(silent=True)
    body = body if isinstance(body, dict) else {}
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        return jsonify(error="username and password are required"), 400
    if not is_valid_username(username):
        problem = f"a username is 1 to {USERNAME_MAX_CHARS} characters, none of them control characters"
        return jsonify(error=problem), 400
    address, account = request.remote_addr or "?", f"{username.lower()}@{request.remote_addr}"
    try:
        gevent.sleep(reserve_together([(by_address, address), (by_account, account)]))
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
        matches, new_hash = _check_password(stored_hash, password)
    except Unavailable as exc:
        return jsonify(error=exc.message), 503
    if not (matches and row and row[2]):
        return jsonify(error="invalid credentials"), 401
    if new_hash is not None:
        _replace_hash(row[0], row[2], new_hash)
    by_account.forget(account)
    by_address.uncount(address)  # shared by everyone behind it: a success just is no failure
    user_id, name = row[0], row[1]
    token = issue_token(config["JWT_SECRET"], user_id, name, config["TOKEN_TTL_SECONDS"])
    return jsonify(token=token, userId=user_id, username=name), 200
