"""Who the test clients are: fresh user ids, their signed tokens, and names no other test uses."""

from __future__ import annotations

import itertools
import random
import time
import uuid

import jwt

SECRET = "test-secret-that-is-long-enough-for-hs256"
_user_ids = itertools.count(random.randint(1_000_000, 9_000_000) * 10)


def new_user_id() -> int:
    """A user id no other test of this run has used."""
    return next(_user_ids)


def make_token(user_id: int, username: str | None = None, secret: str = SECRET, **claims) -> str:
    """A token as the other backend signs it, valid for an hour; `claims` add or override."""
    payload: dict = {"user_id": user_id, "exp": int(time.time()) + 3600}
    if username:
        payload["username"] = username
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm="HS256")


def unique(prefix: str) -> str:
    """A name (room, clientId, ...) starting with `prefix` that no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
