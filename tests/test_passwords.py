"""Password hashes at sign-in, against a real server and database: old ones are replaced."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from werkzeug.security import generate_password_hash

from app import login, passwords
from app.tokens import verify_token
from tests.support.databases import sql
from tests.support.identities import SECRET, unique

# Each test hashes passwords with argon2id (64 MiB, 3 passes) on a real server.
pytestmark = pytest.mark.slow


def sign_in(server, username: str, password: str) -> int:
    request = urllib.request.Request(
        server.http + "/api/login",
        data=json.dumps({"username": username, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            assert verify_token(json.loads(response.read())["token"], SECRET).username == username
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def stored_hash(database_url: str, username: str) -> str:
    return sql(database_url, "SELECT password FROM users WHERE username = %s", (username,))[0][0]


@pytest.mark.parametrize("old_kind", ["scrypt", "pbkdf2:sha256", "weaker argon2id"])
def test_an_old_hash_is_replaced_at_the_next_sign_in(server, database_url, old_kind):
    name = unique("rehash")
    if old_kind == "weaker argon2id":
        from argon2 import PasswordHasher

        old = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash("open sesame")
    else:
        old = generate_password_hash("open sesame", method=old_kind)
    sql(database_url, "INSERT INTO users (username, password) VALUES (%s, %s)", (name, old))
    assert sign_in(server, name, "wrong") == 401
    assert stored_hash(database_url, name) == old  # a failure changes nothing
    assert sign_in(server, name, "open sesame") == 200
    new = stored_hash(database_url, name)
    assert new.startswith("$argon2id$v=19$m=65536,t=3,p=1$")
    assert sign_in(server, name, "open sesame") == 200
    assert stored_hash(database_url, name) == new  # current already: kept
    assert sign_in(server, name, "wrong") == 401


def test_an_unknown_user_costs_a_check_of_the_current_kind():
    """Its answer takes as long as a wrong password of a user with a current hash."""
    assert login._DUMMY_HASH.startswith("$argon2id$")
    assert passwords.check(login._DUMMY_HASH, "not a password") == (True, None)  # of the current parameters


def test_a_stored_value_that_is_no_hash_matches_nothing():
    for stored in ["", "plain", "$argon2id$garbage", "scrypt:1:1:1$salt$00"]:
        assert passwords.check(stored, "plain") == (False, None)
