"""What a username may be: the one rule of tokens, sign-in and create-user.

Names are compared and stored in Unicode NFC, without surrounding whitespace. A name made
here (create-user) is refused when it holds a character that is not shown (zero-width
characters, bidi controls, the BOM, Hangul fillers...): "al\u200bice" would pass for
"alice", and a right-to-left override turns the text after it around. A token's name is
the issuer's, so it is cleaned of them for display rather than refused.
"""

from __future__ import annotations

import re
import unicodedata

# The longest name: a token's longer claim is ignored, and sign-in looks up no longer one
# (a key of whatever length a client sends would be kept in memory for 15 minutes).
USERNAME_MAX_CHARS = 64
# Control characters (a newline in a name would forge lines of the log) and lone
# surrogates (not UTF-8): PostgreSQL refuses NUL and surrogates outright.
_UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt): characters a text
# renderer shows as nothing, among them zero-width spaces and joiners, the bidi controls
# (LRM, RLM, LRE..RLO, LRI..PDI), the BOM, the Hangul fillers and the variation selectors;
# plus the line and paragraph separators (a line break inside a name).
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff\u2028\u2029]"
)


def is_valid_username(name: str) -> bool:
    """Whether `name` (stripped already) can be a user's name."""
    return 0 < len(name) <= USERNAME_MAX_CHARS and not _UNSHOWABLE.search(name)


def local_username(raw: str) -> str:
    """The name a user made here gets: `raw` in NFC, stripped.

    Raises ValueError saying why when it cannot be one (empty, too long, or holding a character not shown).
    """
    if _INVISIBLE.search(raw):
        raise ValueError("a username may not hold invisible or text-direction characters")
    name = _normal(raw)
    if not is_valid_username(name):
        raise ValueError(f"a username is 1 to {USERNAME_MAX_CHARS} characters, none of them control characters")
    return name


def shown_username(raw: str) -> str | None:
    """A token's name as shown: in NFC, stripped, without invisible characters; None if no name is left."""
    name = _normal(_INVISIBLE.sub("", raw))
    return name if is_valid_username(name) else None


def _normal(raw: str) -> str:
    return unicodedata.normalize("NFC", raw).strip()
