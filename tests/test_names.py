"""The rule of usernames (app/names.py), and a token's name as the other users see it."""

from __future__ import annotations

import unicodedata

import pytest

from app.names import USERNAME_MAX_CHARS, local_username, shown_username
from tests.support.clients import Client
from tests.support.databases import sql
from tests.support.identities import make_token, new_user_id, unique

HIDDEN = {
    "zero-width space": "\u200b",
    "zero-width joiner": "\u200d",
    "left-to-right mark": "\u200e",
    "right-to-left override": "\u202e",
    "first-strong isolate": "\u2068",
    "word joiner": "\u2060",
    "byte order mark": "\ufeff",
    "Hangul filler": "\u3164",
    "halfwidth Hangul filler": "\uffa0",
    "Hangul choseong filler": "\u115f",
    "soft hyphen": "\u00ad",
    "variation selector": "\ufe0f",
    "tag character": "\U000e0041",
    "line separator": "\u2028",
}
DECOMPOSED = "Jose\u0301"  # "José" as e + combining acute accent


@pytest.mark.parametrize(
    "raw, stored",
    [
        ("alice", "alice"),
        ("  alice \t", "alice"),
        (DECOMPOSED, "José"),
        ("名前", "名前"),
        ("ann-marie o'neil", "ann-marie o'neil"),
        ("n" * USERNAME_MAX_CHARS, "n" * USERNAME_MAX_CHARS),
    ],
)
def test_a_local_name_is_stored_stripped_in_nfc(raw, stored):
    assert local_username(raw) == stored
    assert unicodedata.is_normalized("NFC", local_username(raw))


@pytest.mark.parametrize("hidden", HIDDEN.values(), ids=HIDDEN.keys())
@pytest.mark.parametrize("where", ["inside", "at the end", "alone"])
def test_a_local_name_with_a_character_not_shown_is_refused(hidden, where):
    raw = {"inside": f"al{hidden}ice", "at the end": f"alice{hidden}", "alone": hidden}[where]
    with pytest.raises(ValueError, match="invisible"):
        local_username(raw)


@pytest.mark.parametrize("raw", ["", "   ", "n" * (USERNAME_MAX_CHARS + 1), "a\nb", "a\x00b", "a\ud800b"])
def test_a_local_name_that_cannot_be_one_is_refused(raw):
    with pytest.raises(ValueError, match="characters"):
        local_username(raw)


@pytest.mark.parametrize("hidden", HIDDEN.values(), ids=HIDDEN.keys())
def test_a_token_name_is_shown_without_the_characters_not_shown(hidden):
    assert shown_username(f"{hidden}al{hidden}ice {hidden}") == "alice"


@pytest.mark.parametrize(
    "raw, shown",
    [
        (" alice ", "alice"),
        (DECOMPOSED, "José"),
        ("\u202e\u200b", None),  # nothing visible left: the stored name is used
        ("\u3164", None),
        ("a\nb", None),
        ("n" * (USERNAME_MAX_CHARS + 1), None),
    ],
)
def test_a_token_name_is_cleaned_or_dropped(raw, shown):
    assert shown_username(raw) == shown


def test_a_token_name_with_a_bidi_override_reaches_everyone_cleaned(server, database_url):
    """ "\u202eecila" would show as "alice" reversed, and turn around what follows it."""
    room = unique("names")
    user_id, watcher_id = new_user_id(), new_user_id()
    sender = Client.connect(server.url, make_token(user_id, "\u202emallory\u200b"))
    assert sender.expect("welcome")["data"]["username"] == "mallory"
    watcher = Client.connect(server.url, make_token(watcher_id, f"watcher{watcher_id}"))
    watcher.expect("welcome")
    watcher.send({"type": "join", "room": room})
    watcher.expect("join_ack", room=room)
    sender.send({"type": "join", "room": room})
    users = sender.expect("join_ack", room=room)["data"]["users"]
    assert {"userId": user_id, "username": "mallory"} in users
    assert watcher.expect("presence", room=room)["data"]["username"] == "mallory"
    sender.send({"type": "message", "room": room, "content": "hello"})
    assert watcher.expect("message", room=room)["data"]["username"] == "mallory"
    assert sql(database_url, "SELECT username FROM users WHERE id = %s", (user_id,)) == [("mallory",)]
    sender.close()
    watcher.close()
