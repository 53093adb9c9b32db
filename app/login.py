"""Standalone sign-in: POST /api/login checks users.password and returns a JWT.

Where another backend issues the tokens, switch it off with LOGIN_ENABLED=false.
Wrong credentials always get the same 401, and repeated failures are slowed down.
"""

from __future__ import annotations

import time

import gevent
from flask import Blueprint, Response, abort, current_app, jsonify, request
from werkzeug.security import check_password_hash, generate_password_hash

from . import db
from .tokens import issue_token

bp = Blueprint("login", __name__)

# Failures before the answers start to slow down, and the slowest answer.
FREE_FAILURES = 3
MAX_DELAY_SECONDS = 5.0
# A failure is forgotten after this long.
FAILURE_MEMORY_SECONDS = 15 * 60

# Checked against when the user does not exist, so that both cases take as long.
_DUMMY_HASH = generate_password_hash("not a password")

# (client address or username) -> (failures, time of the last one)
failures_by_key: dict[str, tuple[int, float]] = {}


def _delay_for(keys: list[str]) -> float:
    now = time.monotonic()
    worst = 0
    for key in keys:
        count, last = failures_by_key.get(key, (0, 0.0))
        if now - last < FAILURE_MEMORY_SECONDS:
            worst = max(worst, count)
    if worst < FREE_FAILURES:
        return 0.0
    return min(MAX_DELAY_SECONDS, 0.25 * 2 ** (worst - FREE_FAILURES))


def _record_failure(keys: list[str]) -> None:
    now = time.monotonic()
    for key in keys:
        count, last = failures_by_key.get(key, (0, 0.0))
        if now - last >= FAILURE_MEMORY_SECONDS:
            count = 0
        failures_by_key[key] = (count + 1, now)


@bp.post("/api/login")
def login() -> tuple[Response, int]:
    config = current_app.config
    if not config["LOGIN_ENABLED"]:
        abort(404)
    body = request.get_json(silent=True) or {}
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        return jsonify(error="username and password are required"), 400
    keys = [f"addr:{request.remote_addr}", f"user:{username.lower()}"]
    gevent.sleep(_delay_for(keys))
    conn = db.connect(config["DATABASE_URL"], config["DB_CONNECT_TIMEOUT_SECONDS"])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id, username, password FROM users WHERE username = %s", (username,))
            row = cur.fetchone()
    finally:
        conn.close()
    stored_hash = row[2] if row and row[2] else _DUMMY_HASH
    if not (check_password_hash(stored_hash, password) and row and row[2]):
        _record_failure(keys)
        return jsonify(error="invalid credentials"), 401
    for key in keys:
        failures_by_key.pop(key, None)
    user_id, name = row[0], row[1]
    token = issue_token(config["JWT_SECRET"], user_id, name, config["TOKEN_TTL_SECONDS"])
    return jsonify(token=token, userId=user_id, username=name), 200
