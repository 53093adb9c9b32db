"""What a username may be: the one rule of tokens, sign-in and create-user."""

from __future__ import annotations

import re

# The longest name: a token's longer claim is ignored, and sign-in looks up no longer one
# (a key of whatever length a client sends would be kept in memory for 15 minutes).
USERNAME_MAX_CHARS = 64
# Control characters (a newline in a name would forge lines of the log) and lone
# surrogates (not UTF-8): PostgreSQL refuses NUL and surrogates outright.
_UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def is_valid_username(name: str) -> bool:
    """Whether `name` (stripped already) can be a user's name."""
    return 0 < len(name) <= USERNAME_MAX_CHARS and not _UNSHOWABLE.search(name)
