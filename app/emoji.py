"""Whether a reaction is one emoji (a single extended grapheme cluster that shows as one),
and the one form it is stored in.

Python's own `re` knows neither grapheme clusters nor emoji properties, so the `regex`
module (Unicode's segmentation rules, UAX #29, and its emoji data) finds the cluster; this
module then allows only what emoji are made of, so that "a" with a combining mark, a
digit, or an emoji followed by invisible characters is refused, not stored for everyone
to see.

One emoji can be typed several ways: a heart is U+2764 alone or followed by the emoji
presentation selector (VS16, U+FE0F), as keyboards and pickers differ. Stored as sent,
those would be two reactions of one user, two chips under the message, and an `unreact`
of the one would leave the other on. So a reaction is stored, compared and told in one
form, Unicode's "fully qualified" one (UTS #51): VS16 after each pictograph that shows as
text by default, unless a skin tone follows it, and in a keycap; nowhere else.
"""

from __future__ import annotations

import regex

# Longest sequence accepted, in code points: the longest emoji in Unicode (a family or a
# tag-sequence flag) is 10; text beyond that is not an emoji however it clusters.
EMOJI_MAX_CODE_POINTS = 16

ONE_CLUSTER = regex.compile(r"\X", regex.V1)
# A pictograph, optionally presented as emoji (VS16) and/or skin-toned; joined by ZWJ.
_PICTOGRAPH = r"\p{Extended_Pictographic}\uFE0F?\p{Emoji_Modifier}?\uFE0F?"
# A flag of a subdivision: the black flag, tag characters, the cancel tag.
_TAG_FLAG = r"\U0001F3F4[\U000E0020-\U000E007E]+\U000E007F"
EMOJI = regex.compile(
    "|".join(
        (
            rf"{_TAG_FLAG}",
            rf"{_PICTOGRAPH}(?:\u200D{_PICTOGRAPH})*",
            r"\p{Regional_Indicator}{2}",  # a country flag
            r"[0-9#*]\uFE0F?\u20E3",  # a keycap
            r"\p{Emoji_Modifier}",  # a skin tone shown alone
        )
    ),
    regex.V1,
)

# A pictograph shown as text unless VS16 follows (Emoji_Presentation=No: the heart, the
# sun, the copyright sign…), not followed by a skin tone (which asks for the emoji form
# itself): it takes a VS16. Only real emoji (Emoji=Yes): unassigned code points kept for
# pictographs have no form to ask for.
_TEXT_DEFAULT = regex.compile(
    r"([\p{Emoji}&&\p{Extended_Pictographic}&&\P{Emoji_Presentation}])(?!\p{Emoji_Modifier})", regex.V1
)
# A keycap's base character (a digit, # or *) takes a VS16 before the combining keycap.
_KEYCAP = regex.compile(r"([0-9#*])\u20E3")


def normal_emoji(emoji: str) -> str:
    """The emoji in its fully qualified form: VS16 where UTS #51 puts it, nowhere else.

    Idempotent, so a client sending back the form it was told gets the same.
    """
    bare = emoji.replace("\ufe0f", "")
    return _KEYCAP.sub("\\1\ufe0f\u20e3", _TEXT_DEFAULT.sub("\\1\ufe0f", bare))


def is_single_emoji(text: str) -> bool:
    """One grapheme cluster that is an emoji: a pictograph (with its presentation selector,
    skin tone, or ZWJ-joined partners), a flag, or a keycap."""
    if not text or len(text) > EMOJI_MAX_CODE_POINTS:
        return False
    cluster = ONE_CLUSTER.match(text)
    if cluster is None or cluster.end() != len(text):
        return False
    return EMOJI.fullmatch(text) is not None
