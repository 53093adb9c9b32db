"""What counts as one emoji for a reaction (app/emoji.py), table-driven."""

from __future__ import annotations

import pytest

from app.emoji import is_single_emoji

ONE_EMOJI = {
    "thumbs up": "\U0001f44d",
    "with skin tone": "\U0001f44d\U0001f3fd",
    "heart with VS16": "\u2764\ufe0f",
    "heart, text default": "\u2764",
    "family (ZWJ)": "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "astronaut, toned (ZWJ)": "\U0001f9d1\U0001f3fd\u200d\U0001f680",
    "rainbow flag": "\U0001f3f3\ufe0f\u200d\U0001f308",
    "country flag": "\U0001f1eb\U0001f1f7",
    "England (tags)": "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",
    "keycap": "1\ufe0f\u20e3",
    "keycap without VS16": "#\u20e3",
    "copyright as emoji": "\u00a9\ufe0f",
}

NOT_ONE_EMOJI = {
    "empty": "",
    "letter": "a",
    "digit": "1",
    "two emoji": "\U0001f44d\U0001f44d",
    "emoji and space": "\U0001f44d ",
    "letter with accent": "a\u0301",
    "emoji with combining accent": "\U0001f44d\u0301",
    "lone regional indicator": "\U0001f1eb",
    "two flags": "\U0001f1eb\U0001f1f7\U0001f1e9\U0001f1ea",
    "emoji and zero-width space": "\U0001f44d\u200b",
    "trailing ZWJ": "\U0001f600\u200d",
    "ZWJ alone": "\u200d",
    "VS16 alone": "\ufe0f",
    "word": "ok",
    "too long a ZWJ chain": "\u200d".join(["\U0001f44d"] * 9),
    "NUL": "\x00",
}


@pytest.mark.parametrize("text", ONE_EMOJI.values(), ids=ONE_EMOJI.keys())
def test_one_emoji_is_accepted(text):
    assert is_single_emoji(text)


@pytest.mark.parametrize("text", NOT_ONE_EMOJI.values(), ids=NOT_ONE_EMOJI.keys())
def test_anything_else_is_refused(text):
    assert not is_single_emoji(text)
