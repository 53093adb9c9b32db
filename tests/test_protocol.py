"""The protocol layer without sockets: parsing, validation, frames, tokens."""

from __future__ import annotations

import time

import jwt
import pytest

from app import protocol
from app.errors import BadJson, ChatError, Invalid, NotFound, TooLarge, Unauthorized, UnknownType
from app.protocol import Command, Limits, parse_frame
from app.tokens import issue_token, token_from_request, verify_token

SECRET = "unit-test-secret-unit-test-secret"


@pytest.mark.parametrize(
    "raw,expected",
    [
        ('{"type":"join","room":"general"}', Command("join", room="general")),
        ('{"type":"join_room","room":"a.b-c_d","since":7}', Command("join", room="a.b-c_d", since=7)),
        ('{"type":"leave","room":"r"}', Command("leave", room="r")),
        (
            '{"type":"message","room":"r","content":"hi","clientId":"x"}',
            Command("message", room="r", content="hi", client_id="x"),
        ),
        ('{"type":"room_message","room":"r","content":"hi"}', Command("message", room="r", content="hi")),
        ('{"type":"dm","to":5,"content":"hi"}', Command("dm", to=5, content="hi")),
        ('{"type":"direct_message","to_user_id":5,"content":"hi"}', Command("dm", to=5, content="hi")),
        ('{"type":"dm","to":"5","content":"hi"}', Command("dm", to=5, content="hi")),
        # a zero-width joiner is invisible, the emoji it joins are not
        ('{"type":"dm","to":5,"content":"\\u200d\\ud83d\\udc4d"}', Command("dm", to=5, content="\u200d\U0001f44d")),
        ('{"type":"room_history","room":"r"}', Command("room_history", room="r", limit=50)),
        (
            '{"type":"room_history","room":"r","limit":999,"before":10}',
            Command("room_history", room="r", limit=200, before=10),
        ),
        # Integral numbers beyond 64 bits arrive as floats: capped like any large limit.
        (
            '{"type":"room_history","room":"r","limit":18446744073709551616}',
            Command("room_history", room="r", limit=200),
        ),
        ('{"type":"room_history","room":"r","limit":1e3}', Command("room_history", room="r", limit=200)),
        ('{"type":"dm_history","with":3,"after":4}', Command("dm_history", to=3, limit=50, after=4)),
        ('{"type":"conversations"}', Command("conversations", limit=200, offset=0)),
        ('{"type":"conversations","limit":5000,"offset":7}', Command("conversations", limit=1000, offset=7)),
        ('{"type":"join","room":"r","since":"1000000000000000000"}', Command("join", room="r", since=10**18)),
        ('{"type":"dm_history","with":"9223372036854775807"}', Command("dm_history", to=2**63 - 1, limit=50)),
        ('{"type":"typing","room":"r"}', Command("typing", room="r")),
        ('{"type":"rooms"}', Command("rooms", query="", limit=1000)),
        ('{"type":"rooms","query":"Gen","limit":5}', Command("rooms", query="Gen", limit=5)),
        ('{"type":"rooms","query":null,"limit":5000}', Command("rooms", query="", limit=1000)),
        ('{"type":"ping","extra":"ignored"}', Command("ping")),
        ('{"type":"auth","token":"t"}', Command("auth", token="t")),
    ],
)
def test_valid_frames_parse_to_commands(raw, expected):
    assert parse_frame(raw) == expected


@pytest.mark.parametrize(
    "raw,error,word",
    [
        ("{", BadJson, "JSON"),
        (b'{"type":"ping"}', BadJson, "binary"),
        ("42", Invalid, "object"),
        ('{"type": 3}', Invalid, "type"),
        ('{"type":"nope"}', UnknownType, "nope"),
        ('{"type":"join","room":"a/b"}', Invalid, "room"),
        ('{"type":"join","room":"r","since":-1}', Invalid, "since"),
        ('{"type":"join","room":"r","since":true}', Invalid, "since"),
        ('{"type":"message","room":"r","content":""}', Invalid, "blank"),
        ('{"type":"message","room":"r","content":"\\u0000"}', Invalid, "NUL"),
        ('{"type":"message","room":"r","content":" \\u200b\\u2060\\ufeff "}', Invalid, "blank"),
        ('{"type":"message","room":"r","content":"hi","clientId":""}', Invalid, "clientId"),
        ('{"type":"message","room":"r","content":"hi","clientId":5}', Invalid, "clientId"),
        ('{"type":"dm","to":0,"content":"hi"}', NotFound, "user 0"),
        ('{"type":"dm_history","with":-1}', NotFound, "user -1"),
        ('{"type":"dm","to":9223372036854775808,"content":"hi"}', NotFound, "does not exist"),
        # the same ids as decimal strings, and past 2**64 (which orjson reads as a float)
        ('{"type":"dm","to":"0","content":"hi"}', NotFound, "user 0"),
        ('{"type":"dm","to":"9223372036854775808","content":"hi"}', NotFound, "does not exist"),
        ('{"type":"dm","to":18446744073709551616,"content":"hi"}', NotFound, "does not exist"),
        ('{"type":"dm_history","with":"18446744073709551616"}', NotFound, "does not exist"),
        ('{"type":"dm","to":-9300000000000000000,"content":"hi"}', NotFound, "does not exist"),
        ('{"type":"room_history","room":"r","after":-9300000000000000000}', Invalid, "at least"),
        ('{"type":"join","room":"r","since":18446744073709551616}', Invalid, "out of range"),
        ('{"type":"room_history","room":"r","before":-18446744073709551616}', Invalid, "at least"),
        ('{"type":"dm","to":2.5,"content":"hi"}', Invalid, "to"),
        ('{"type":"dm","to":true,"content":"hi"}', Invalid, "to"),
        ('{"type":"room_history","room":"r","limit":2.5}', Invalid, "limit"),
        ('{"type":"room_history","room":"r","before":"x"}', Invalid, "before"),
        # Unicode digits are digits to str.isdigit(), not decimal ids.
        ('{"type":"dm","to":"\u00b2","content":"hi"}', Invalid, "to"),
        ('{"type":"join","room":"r","since":"\u0661"}', Invalid, "since"),
        ('{"type":"dm_history","with":"\u0666\u0660"}', Invalid, "with"),
        ('{"type":"auth"}', Invalid, "token"),
        ('{"type":"rooms","query":5}', Invalid, "query"),
        ('{"type":"rooms","query":"' + "g" * 65 + '"}', Invalid, "longer than 64"),
        ('{"type":"rooms","limit":0}', Invalid, "limit"),
        ('{"type":"rooms","limit":"ten"}', Invalid, "limit"),
    ],
)
def test_bad_frames_raise_the_error_for_their_code(raw, error, word):
    with pytest.raises(error) as info:
        parse_frame(raw)
    assert word in info.value.message
    assert isinstance(info.value, ChatError)


def test_content_limit_is_configurable():
    limits = Limits(max_content_chars=5)
    assert parse_frame('{"type":"message","room":"r","content":"12345"}', limits).content == "12345"
    with pytest.raises(TooLarge):
        parse_frame('{"type":"message","room":"r","content":"123456"}', limits)


def test_error_frame_carries_the_text_twice():
    assert protocol.error_frame("invalid", "field 'room' is required") == {
        "type": "error",
        "message": "field 'room' is required",
        "code": "invalid",
        "data": {"message": "field 'room' is required", "code": "invalid"},
    }


def test_timestamps_are_rfc3339_utc_with_microseconds():
    from datetime import datetime, timedelta, timezone

    moment = datetime(2026, 11, 23, 13, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert protocol.format_timestamp(moment) == "2026-11-23T12:00:00.123456Z"
    assert protocol.format_timestamp(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05.000000Z"


def test_tokens_are_verified():
    token = issue_token(SECRET, 7, "gus", ttl_seconds=60)
    identity = verify_token(token, SECRET)
    assert (identity.user_id, identity.username) == (7, "gus")
    assert verify_token(jwt.encode({"sub": 8}, SECRET, algorithm="HS256"), SECRET).user_id == 8
    for bad in (
        jwt.encode({"user_id": 1, "exp": int(time.time()) - 1}, SECRET, algorithm="HS256"),
        jwt.encode({"user_id": 1}, "other-secret-other-secret-other-secret", algorithm="HS256"),
        jwt.encode({"user_id": 1}, None, algorithm="none"),
        jwt.encode({"user_id": "one"}, SECRET, algorithm="HS256"),
        jwt.encode({"user_id": True}, SECRET, algorithm="HS256"),
        jwt.encode({"sub": "\u00b2"}, SECRET, algorithm="HS256"),
        jwt.encode({"sub": "\u0661\u0662"}, SECRET, algorithm="HS256"),
        "",
    ):
        with pytest.raises(Unauthorized):
            verify_token(bad, SECRET)


def test_exp_holds_to_the_second_and_the_leeway_is_for_nbf_and_iat_only():
    def token(**claims):
        return jwt.encode({"user_id": 1, **claims}, SECRET, algorithm="HS256")

    now = int(time.time())
    for expired in (token(exp=now - 1), token(exp=now), token(exp=str(now - 1))):
        with pytest.raises(Unauthorized, match="expired"):
            verify_token(expired, SECRET, leeway_seconds=30)
    with pytest.raises(Unauthorized, match="exp"):
        verify_token(token(exp="soon"), SECRET, leeway_seconds=30)
    # an issuer whose clock runs 10 s ahead: taken within a leeway of 30 s, refused without
    ahead = token(iat=now + 10, nbf=now + 10, exp=now + 70)
    assert verify_token(ahead, SECRET, leeway_seconds=30).expires_at == now + 70
    with pytest.raises(Unauthorized, match="not valid yet"):
        verify_token(ahead, SECRET, leeway_seconds=5)


@pytest.mark.parametrize(
    ("exp", "expires_at", "wire"),
    [
        (4102444800, 4102444800.0, "2100-01-01T00:00:00.000000Z"),
        ("4102444800", 4102444800.0, "2100-01-01T00:00:00.000000Z"),  # PyJWT takes a numeric string
        (10**12, 1e12, None),  # past the year 9999: "never" on the wire
        (10**400, None, None),  # past what a float holds
        (None, None, None),
    ],
)
def test_a_tokens_expiry_is_kept_and_reported(exp, expires_at, wire):
    claims = {"user_id": 5} if exp is None else {"user_id": 5, "exp": exp}
    identity = verify_token(jwt.encode(claims, SECRET, algorithm="HS256"), SECRET)
    assert identity.expires_at == expires_at
    answer = protocol.auth_ok_frame(5, identity.expires_at)
    assert answer == {"type": "auth_ok", "data": {"userId": 5, "expiresAt": wire}}


def test_claims_the_server_does_not_use_do_not_refuse_a_token():
    token = jwt.encode({"user_id": 4, "aud": "chat", "jti": 17, "iss": "backend"}, SECRET, algorithm="HS256")
    assert verify_token(token, SECRET).user_id == 4


def test_a_configured_audience_must_be_the_tokens():
    def token(**claims):
        return jwt.encode({"user_id": 4, **claims}, SECRET, algorithm="HS256")

    assert verify_token(token(aud="chat"), SECRET, audience="chat").user_id == 4
    assert verify_token(token(aud=["mail", "chat"]), SECRET, audience="chat").user_id == 4
    for bad in (token(aud="mail"), token()):
        with pytest.raises(Unauthorized):
            verify_token(bad, SECRET, audience="chat")


def test_token_precedence_header_then_query():
    assert token_from_request({"Authorization": "Bearer aaa"}, {"token": "bbb"}) == "aaa"
    assert token_from_request({}, {"token": "bbb"}) == "bbb"
    assert token_from_request({"Authorization": "Basic xyz"}, {}) is None
    # Named but empty: refused (401), not taken for "no token, `auth` comes next".
    assert token_from_request({}, {"token": ""}) == ""
    assert token_from_request({"Authorization": "Bearer "}, {"token": "bbb"}) == ""


@pytest.mark.parametrize(
    "content,names",
    [
        ("no mention at all", None),
        ("mail x@alice.com", None),  # an address: a word character before the @
        ("@Alice hi", ["alice"]),
        ("hi @alice.", ["alice", "alice."]),
        ("(@alice), @ALICE!", ["alice"]),
        ("@alicea", ["alicea"]),  # someone else: alice is not mentioned
        ("@alice.smith and @bob-jones", ["alice", "alice.smith", "bob", "bob-jones"]),
        ("@room: lunch", ["room"]),
        ("@@alice", ["alice"]),
        ("@ alone", None),
        ("@Émile", ["émile"]),
    ],
)
def test_mentions_are_whole_words_lower_cased(content, names):
    assert protocol.mentions_in(content) == names


@pytest.mark.parametrize(
    "raw,expected",
    [
        ('{"type":"read","room":"r","id":5}', Command("read", room="r", message_id=5)),
        ('{"type":"read","with":"7","id":"5"}', Command("read", to=7, message_id=5)),
        ('{"type":"search","query":"a b"}', Command("search", query="a b", limit=20)),
        (
            '{"type":"search","query":"x","room":"r","before":9,"limit":500}',
            Command("search", query="x", room="r", before=9, limit=100),
        ),
        ('{"type":"search","query":"x","with":3}', Command("search", query="x", to=3, limit=20)),
    ],
)
def test_read_and_search_frames_parse(raw, expected):
    assert parse_frame(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        '{"type":"read","room":"r"}',
        '{"type":"read","id":1}',
        '{"type":"read","room":"r","with":1,"id":1}',
        '{"type":"search"}',
        '{"type":"search","query":" \\u200b "}',
        '{"type":"search","query":"x","room":"r","with":2}',
        '{"type":"search","query":"x","limit":0}',
    ],
)
def test_bad_read_and_search_frames_are_invalid(raw):
    with pytest.raises(Invalid):
        parse_frame(raw)


@pytest.mark.parametrize(
    "raw,expected",
    [
        ('{"type":"react","id":5,"emoji":"\\u2764"}', Command("react", message_id=5, emoji="\u2764\ufe0f")),
        ('{"type":"unreact","id":5,"emoji":"\\u2764\\ufe0f"}', Command("unreact", message_id=5, emoji="\u2764\ufe0f")),
        ('{"type":"react","id":5,"emoji":"\\ud83d\\udc4d\\ufe0f"}', Command("react", message_id=5, emoji="\U0001f44d")),
    ],
)
def test_a_reactions_emoji_is_parsed_into_its_one_stored_form(raw, expected):
    assert parse_frame(raw) == expected
