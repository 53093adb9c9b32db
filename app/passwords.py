"""Password hashes: argon2id for every new one; werkzeug's older ones still verify.

A hash of an older kind (werkzeug's scrypt with N=2^15, or pbkdf2), or of weaker argon2
parameters, is replaced at the user's next successful sign-in (`check`).
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from werkzeug.security import check_password_hash

# RFC 9106's second recommended option (64 MiB, 3 passes), on one lane instead of four:
# a check then takes one core, and login.HASHES_AT_ONCE bounds the cores sign-in can take
# from the event loop. An attacker's cost per guess does not depend on the lanes.
HASHER = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=1)
ARGON2_PREFIX = "$argon2"


def hash_password(password: str) -> str:
    """A new argon2id hash of the password."""
    return HASHER.hash(password)


def check(stored_hash: str, password: str) -> tuple[bool, str | None]:
    """Whether the password matches, and the hash to store instead if the stored one is weaker (else None).

    Blocks a core for as long as a hash takes: call it from a thread (argon2 and
    hashlib's scrypt release the GIL).
    """
    if not stored_hash.startswith(ARGON2_PREFIX):
        try:
            if not check_password_hash(stored_hash, password):
                return False, None
        except ValueError:  # parameters hashlib refuses: no hash of ours
            return False, None
        return True, hash_password(password)
    try:
        HASHER.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):  # a mismatch, or a hash that is not one
        return False, None
    return True, hash_password(password) if HASHER.check_needs_rehash(stored_hash) else None
