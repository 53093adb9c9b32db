"""What counts as one emoji for a reaction, and the form it is stored in (app/emoji.py), table-driven."""

from __future__ import annotations

import pytest

from app.emoji import is_single_emoji, normal_emoji

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


# (as sent, its fully qualified form: UTS #51's emoji-test.txt gives these)
NORMAL_FORMS = {
    "heart, text default, takes VS16": ("\u2764", "\u2764\ufe0f"),
    "heart with VS16 is kept": ("\u2764\ufe0f", "\u2764\ufe0f"),
    "thumbs up, emoji default, stays bare": ("\U0001f44d", "\U0001f44d"),
    "a VS16 after an emoji-default one is dropped": ("\U0001f44d\ufe0f", "\U0001f44d"),
    "a toned text-default hand takes none": ("\U0001f590\ufe0f\U0001f3fd", "\U0001f590\U0001f3fd"),
    "rainbow flag without VS16 takes one": ("\U0001f3f3\u200d\U0001f308", "\U0001f3f3\ufe0f\u200d\U0001f308"),
    "eye in speech bubble: each text-default part": (
        "\U0001f441\u200d\U0001f5e8",
        "\U0001f441\ufe0f\u200d\U0001f5e8\ufe0f",
    ),
    "man golfing, toned: the sign only": (
        "\U0001f3cc\U0001f3fd\u200d\u2642",
        "\U0001f3cc\U0001f3fd\u200d\u2642\ufe0f",
    ),
    "keycap without VS16 takes one": ("#\u20e3", "#\ufe0f\u20e3"),
    "country flag unchanged": ("\U0001f1eb\U0001f1f7", "\U0001f1eb\U0001f1f7"),
    "copyright takes VS16": ("\u00a9", "\u00a9\ufe0f"),
}


@pytest.mark.parametrize(("sent", "normal"), NORMAL_FORMS.values(), ids=NORMAL_FORMS.keys())
def test_an_emoji_is_stored_in_its_fully_qualified_form(sent, normal):
    assert normal_emoji(sent) == normal


@pytest.mark.parametrize("text", ONE_EMOJI.values(), ids=ONE_EMOJI.keys())
def test_the_normal_form_is_its_own_normal_form_and_still_one_emoji(text):
    normal = normal_emoji(text)
    assert normal_emoji(normal) == normal
    assert is_single_emoji(normal)
