"""Whether a reaction is one emoji: a single extended grapheme cluster that shows as one.

Python's own `re` knows neither grapheme clusters nor emoji properties, so the `regex`
module (Unicode's segmentation rules, UAX #29, and its emoji data) finds the cluster; this
module then allows only what emoji are made of, so that "a" with a combining mark, a
digit, or an emoji followed by invisible characters is refused, not stored for everyone
to see.
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


def is_single_emoji(text: str) -> bool:
    """One grapheme cluster that is an emoji: a pictograph (with its presentation selector,
    skin tone, or ZWJ-joined partners), a flag, or a keycap."""
    if not text or len(text) > EMOJI_MAX_CODE_POINTS:
        return False
    cluster = ONE_CLUSTER.match(text)
    if cluster is None or cluster.end() != len(text):
        return False
    return EMOJI.fullmatch(text) is not None
