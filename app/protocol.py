"""Client frames parsed into commands, and server frames built: PROTOCOL.md without I/O.

`parse_frame` turns one received text frame into a `Command` or raises a `ChatError`;
the `*_frame` functions build server frames as dicts and `encode` serialises them once.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any, NamedTuple

import orjson

from .emoji import is_single_emoji, normal_emoji
from .errors import BadJson, Invalid, NotFound, TooLarge, UnknownType

ROOM_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
CLIENT_ID_MAX_CHARS = 64
# Conversations per `conversations` answer (PROTOCOL.md §6): a user with 50k DM partners
# got them all in one 2.7 MB frame.
CONVERSATIONS_DEFAULT_LIMIT = 200
CONVERSATIONS_MAX_LIMIT = 1000
# Rooms per `my_rooms` answer, likewise (PROTOCOL.md §6).
MY_ROOMS_DEFAULT_LIMIT = 200
MY_ROOMS_MAX_LIMIT = 1000
# A room's description (create_room), in characters: a line under the name in a room list.
DESCRIPTION_MAX_CHARS = 500
# Users per `users` answer (PROTOCOL.md §11): a picker shows a screenful; everyone at once
# (100k) is not a list anybody reads.
USERS_DEFAULT_LIMIT = 20
USERS_MAX_LIMIT = 100
# The longest `users` or `rooms` query: no user or room name is longer (app/names.py,
# USERNAME_MAX_CHARS; ROOM_NAME above).
NAME_QUERY_MAX_CHARS = 64
# Rooms per `rooms` answer, also without a `limit` (the server may list fewer: ROOMS_LIST_MAX).
ROOMS_MAX_LIMIT = 1000
# Search results per answer (PROTOCOL.md §11).
SEARCH_DEFAULT_LIMIT = 20
SEARCH_MAX_LIMIT = 100
# The longest search query: a few words; a paragraph is no query (and costs the index a
# lookup per word).
SEARCH_QUERY_MAX_CHARS = 256
# A mention (PROTOCOL.md §9): "@" where no word character stands before it, then a name
# of word characters, "." and "-". Names made of other characters (a space) cannot be
# mentioned; everyone can with @room.
MENTION = re.compile(r"(?<!\w)@(\w[\w.-]*)")
# The word that mentions every member of the room.
ROOM_MENTION = "room"

# Older clients spoke these names; each maps to the current type (PROTOCOL.md §2).
TYPE_ALIASES = {
    "join_room": "join",
    "room_message": "message",
    "direct_message": "dm",
}


@dataclass(frozen=True)
class Limits:
    """The frame-level limits of PROTOCOL.md §4 (each configurable)."""

    max_content_chars: int = 4000
    history_default_limit: int = 50
    history_max_limit: int = 200


class Command(NamedTuple):
    """One validated client request: its type and its normalised fields.

    A named tuple: every frame a client sends makes one, and a tuple is built in one C
    call, where a frozen dataclass sets each of these fields through object.__setattr__.
    """

    type: str
    room: str | None = None
    content: str | None = None
    client_id: str | None = None
    to: int | None = None
    since: int | None = None
    limit: int | None = None
    before: int | None = None
    after: int | None = None
    offset: int | None = None
    token: str | None = None
    user_id: int | None = None
    private: bool = False
    description: str = ""
    query: str | None = None
    message_id: int | None = None  # what a read marks up to, or what an edit, delete or reaction is about
    emoji: str | None = None


def parse_frame(raw: str | bytes, limits: Limits = Limits()) -> Command:
    """Parse and validate one client frame; raise a ChatError naming what is wrong."""
    if isinstance(raw, (bytes, bytearray)):
        raise BadJson("frames must be JSON text frames, not binary")
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadJson(f"frame is not valid JSON: {exc.msg}") from None
    if not isinstance(frame, dict):
        raise Invalid("frame must be a JSON object")
    kind = frame.get("type")
    if not isinstance(kind, str):
        raise Invalid("field 'type' is missing or not a string")
    kind = TYPE_ALIASES.get(kind, kind)
    parser = _PARSERS.get(kind)
    if parser is None:
        raise UnknownType(f"unknown frame type '{kind[:64]}'")
    return parser(frame, limits)


# --- field readers -------------------------------------------------------------------


def _int_field(frame: dict[str, Any], name: str, *, required: bool, minimum: int = 0) -> int | None:
    value = frame.get(name)
    if value is None:
        if required:
            raise Invalid(f"field '{name}' is required")
        return None
    value = _as_integer(value)
    if value is None:
        raise Invalid(f"field '{name}' must be an integer")
    if value < minimum:
        raise Invalid(f"field '{name}' must be at least {minimum}")
    if value > 2**63 - 1:
        raise Invalid(f"field '{name}' is out of range")
    return value


def _as_integer(value: Any) -> int | None:
    """An id as a client may send it, or None when it is not one.

    A JSON integer; orjson reads one outside [-2**63, 2**64) as a float, so an integral
    float out there stands for the integer it was. A string of ASCII digits, as older clients
    send (str.isdigit() is true for "²" and "٦", which int() refuses or reads as another
    number), at most 64 of them.
    """
    if isinstance(value, bool):
        return None  # JSON true/false are ints to Python; ids never are
    if isinstance(value, int):
        return value
    if isinstance(value, float) and not -(2**63) <= value < 2**64 and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 64:
        return int(value)
    return None


def _user_field(frame: dict[str, Any], name: str) -> int:
    """A user id: an integer like any id; one no user can have (0, negative, beyond a
    bigint) names an unknown user, `not_found` like any other (it is not ill-typed)."""
    value = _as_integer(frame.get(name))
    if value is not None and not 0 < value < 2**63:
        raise NotFound(f"user {value} does not exist")
    return _int_field(frame, name, required=True, minimum=1)


def _room(frame: dict[str, Any]) -> str:
    room = frame.get("room")
    if room is None:
        raise Invalid("field 'room' is required")
    if not isinstance(room, str):
        raise Invalid("field 'room' must be a string")
    if not ROOM_NAME.fullmatch(room):
        raise Invalid("field 'room' must be 1-64 letters, digits, '-', '_' or '.'")
    return room


def _content(frame: dict[str, Any], limits: Limits) -> str:
    content = frame.get("content")
    if content is None:
        raise Invalid("field 'content' is required")
    if not isinstance(content, str):
        raise Invalid("field 'content' must be a string")
    if len(content) > limits.max_content_chars:
        raise TooLarge(f"field 'content' is longer than {limits.max_content_chars} characters")
    if "\x00" in content:
        raise Invalid("field 'content' must not contain NUL characters")
    if _blank(content):
        raise Invalid("field 'content' must not be blank")
    return content


def _blank(text: str) -> bool:
    """Whether text shows nothing: only whitespace and invisible format characters (a
    zero-width space, a word joiner, a BOM), which str.strip() keeps. Looks only as far
    as the first visible character, the first one of nearly every message."""
    for char in text:
        if not char.isspace() and unicodedata.category(char) != "Cf":
            return False
    return True


def _client_id(frame: dict[str, Any]) -> str | None:
    client_id = frame.get("clientId")
    if client_id is None:
        return None
    if not isinstance(client_id, str) or not client_id:
        raise Invalid("field 'clientId' must be a non-empty string")
    if len(client_id) > CLIENT_ID_MAX_CHARS:
        raise Invalid(f"field 'clientId' is longer than {CLIENT_ID_MAX_CHARS} characters")
    if "\x00" in client_id:
        raise Invalid("field 'clientId' must not contain NUL characters")
    return client_id


def _limit(frame: dict[str, Any], default: int, cap: int) -> int:
    """A page size: positive, `default` when absent, at most `cap`."""
    limit = frame.get("limit")
    if isinstance(limit, float) and limit.is_integer():
        # An integral number all the same: 1e3, or one too big for a 64-bit integer,
        # which the JSON parser hands over as a float. Capped below like any other.
        limit = int(limit)
    if limit is None:
        return default
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise Invalid("field 'limit' must be a positive integer")
    return min(limit, cap)


def _page(frame: dict[str, Any], limits: Limits) -> dict[str, int | None]:
    return {
        "limit": _limit(frame, limits.history_default_limit, limits.history_max_limit),
        "before": _int_field(frame, "before", required=False),
        "after": _int_field(frame, "after", required=False),
    }


# --- one parser per type ---------------------------------------------------------------


def _parse_auth(frame: dict[str, Any], limits: Limits) -> Command:
    token = frame.get("token")
    if not isinstance(token, str) or not token:
        raise Invalid("field 'token' is required and must be a string")
    return Command("auth", token=token)


def _parse_join(frame: dict[str, Any], limits: Limits) -> Command:
    return Command("join", room=_room(frame), since=_int_field(frame, "since", required=False))


def _parse_leave(frame: dict[str, Any], limits: Limits) -> Command:
    return Command("leave", room=_room(frame))


def _parse_message(frame: dict[str, Any], limits: Limits) -> Command:
    room = _room(frame)
    return Command("message", room=room, content=_content(frame, limits), client_id=_client_id(frame))


def _parse_dm(frame: dict[str, Any], limits: Limits) -> Command:
    # `direct_message` clients name the recipient `to_user_id`.
    key = "to" if "to" in frame or "to_user_id" not in frame else "to_user_id"
    to = _user_field(frame, key)
    return Command("dm", to=to, content=_content(frame, limits), client_id=_client_id(frame))


def _parse_room_history(frame: dict[str, Any], limits: Limits) -> Command:
    return Command("room_history", room=_room(frame), **_page(frame, limits))


def _parse_dm_history(frame: dict[str, Any], limits: Limits) -> Command:
    other = _user_field(frame, "with")
    return Command("dm_history", to=other, **_page(frame, limits))


def _parse_typing(frame: dict[str, Any], limits: Limits) -> Command:
    """In a room (`room`), or in the DM conversation with user `to`."""
    if "to" not in frame:
        return Command("typing", room=_room(frame))
    if "room" in frame:
        raise Invalid("typing takes either 'room' or 'to', not both")
    return Command("typing", to=_user_field(frame, "to"))


def _name_query(frame: dict[str, Any]) -> str:
    """The optional `query` of `users` and `rooms`: a string of at most NAME_QUERY_MAX_CHARS, "" when absent."""
    query = frame.get("query")
    if query is None:
        return ""  # everyone, every room
    if not isinstance(query, str):
        raise Invalid("field 'query' must be a string")
    if len(query) > NAME_QUERY_MAX_CHARS:
        raise Invalid(f"field 'query' is longer than {NAME_QUERY_MAX_CHARS} characters")
    if "\x00" in query:
        raise Invalid("field 'query' must not contain NUL characters")
    # Names are stored in NFC (app/names.py): "e" + a combining accent finds "é".
    return unicodedata.normalize("NFC", query)


def _parse_users(frame: dict[str, Any], limits: Limits) -> Command:
    return Command("users", query=_name_query(frame), limit=_limit(frame, USERS_DEFAULT_LIMIT, USERS_MAX_LIMIT))


def _parse_rooms(frame: dict[str, Any], limits: Limits) -> Command:
    return Command("rooms", query=_name_query(frame), limit=_limit(frame, ROOMS_MAX_LIMIT, ROOMS_MAX_LIMIT))


def _parse_conversations(frame: dict[str, Any], limits: Limits) -> Command:
    return Command(
        "conversations",
        limit=_limit(frame, CONVERSATIONS_DEFAULT_LIMIT, CONVERSATIONS_MAX_LIMIT),
        offset=_int_field(frame, "offset", required=False) or 0,
    )


def _parse_my_rooms(frame: dict[str, Any], limits: Limits) -> Command:
    return Command(
        "my_rooms",
        limit=_limit(frame, MY_ROOMS_DEFAULT_LIMIT, MY_ROOMS_MAX_LIMIT),
        offset=_int_field(frame, "offset", required=False) or 0,
    )


def _parse_read(frame: dict[str, Any], limits: Limits) -> Command:
    """Read up to `id` in a room (`room`) or in the DM conversation with `with`."""
    room, other = _channel_fields(frame, required=True)
    return Command("read", room=room, to=other, message_id=_int_field(frame, "id", required=True))


def _parse_search(frame: dict[str, Any], limits: Limits) -> Command:
    query = frame.get("query")
    if not isinstance(query, str):
        raise Invalid("field 'query' is required and must be a string")
    if len(query) > SEARCH_QUERY_MAX_CHARS:
        raise Invalid(f"field 'query' is longer than {SEARCH_QUERY_MAX_CHARS} characters")
    if "\x00" in query:
        raise Invalid("field 'query' must not contain NUL characters")
    if _blank(query):
        raise Invalid("field 'query' must not be blank")
    room, other = _channel_fields(frame, required=False)
    return Command(
        "search",
        query=query,
        room=room,
        to=other,
        before=_int_field(frame, "before", required=False),
        limit=_limit(frame, SEARCH_DEFAULT_LIMIT, SEARCH_MAX_LIMIT),
    )


def _channel_fields(frame: dict[str, Any], required: bool) -> tuple[str | None, int | None]:
    """A room (`room`) or a DM conversation (`with`), one of the two."""
    if "room" in frame and frame["room"] is not None:
        if "with" in frame and frame["with"] is not None:
            raise Invalid("give either 'room' or 'with', not both")
        return _room(frame), None
    if "with" in frame and frame["with"] is not None:
        return None, _user_field(frame, "with")
    if required:
        raise Invalid("field 'room' or 'with' is required")
    return None, None


def mentions_in(content: str) -> list[str] | None:
    """The names a message mentions, lower-cased, for the unread mention counts (None:
    none). "@alice.smith!" yields "alice.smith" and "alice": a name is mentioned when no
    word character follows it, so "@alice." mentions alice and "@alicea" does not."""
    if "@" not in content:
        return None  # nearly every message: no regex
    names: set[str] = set()
    for match in MENTION.finditer(content):
        word = match.group(1).lower()
        names.add(word)
        for index, char in enumerate(word):
            if char in ".-":
                names.add(word[:index])
    return sorted(names) or None


def _message_id(frame: dict[str, Any]) -> int:
    """The message an event is about: an id like any other; one no message can have (0,
    negative, beyond a bigint) is an unknown message, `not_found` (it is not ill-typed)."""
    value = _as_integer(frame.get("id"))
    if value is not None and not 0 < value < 2**63:
        raise NotFound(f"message {value} does not exist")
    return _int_field(frame, "id", required=True, minimum=1)


def _emoji(frame: dict[str, Any]) -> str:
    emoji = frame.get("emoji")
    if emoji is None:
        raise Invalid("field 'emoji' is required")
    if not isinstance(emoji, str) or not is_single_emoji(emoji):
        raise Invalid("field 'emoji' must be a single emoji")
    # Stored and told in one form (app/emoji.py), which must itself be one emoji within the
    # length limit: the form a client is told is the form it may send back.
    normal = normal_emoji(emoji)
    if normal != emoji and not is_single_emoji(normal):
        raise Invalid("field 'emoji' must be a single emoji")
    return normal


def _parse_edit(frame: dict[str, Any], limits: Limits) -> Command:
    return Command("edit", message_id=_message_id(frame), content=_content(frame, limits))


def _parse_delete(frame: dict[str, Any], limits: Limits) -> Command:
    return Command("delete", message_id=_message_id(frame))


def _parse_reaction(kind: str):
    def parse(frame: dict[str, Any], limits: Limits) -> Command:
        return Command(kind, message_id=_message_id(frame), emoji=_emoji(frame))

    return parse


def _parse_create_room(frame: dict[str, Any], limits: Limits) -> Command:
    private = frame.get("private", False)
    if not isinstance(private, bool):
        raise Invalid("field 'private' must be true or false")
    description = frame.get("description", "")
    if not isinstance(description, str):
        raise Invalid("field 'description' must be a string")
    if len(description) > DESCRIPTION_MAX_CHARS:
        raise TooLarge(f"field 'description' is longer than {DESCRIPTION_MAX_CHARS} characters")
    if "\x00" in description:
        raise Invalid("field 'description' must not contain NUL characters")
    return Command("create_room", room=_room(frame), private=private, description=description)


def _parse_member_change(kind: str):
    """`invite` and `remove`: a room and the user it is about."""

    def parse(frame: dict[str, Any], limits: Limits) -> Command:
        return Command(kind, room=_room(frame), user_id=_user_field(frame, "userId"))

    return parse


def _parse_bare(kind: str):
    def parse(frame: dict[str, Any], limits: Limits) -> Command:
        return Command(kind)

    return parse


_PARSERS = {
    "auth": _parse_auth,
    "join": _parse_join,
    "leave": _parse_leave,
    "message": _parse_message,
    "dm": _parse_dm,
    "room_history": _parse_room_history,
    "dm_history": _parse_dm_history,
    "typing": _parse_typing,
    "rooms": _parse_rooms,
    "conversations": _parse_conversations,
    "my_rooms": _parse_my_rooms,
    "create_room": _parse_create_room,
    "invite": _parse_member_change("invite"),
    "remove": _parse_member_change("remove"),
    "users": _parse_users,
    "ping": _parse_bare("ping"),
    "read": _parse_read,
    "search": _parse_search,
    "edit": _parse_edit,
    "delete": _parse_delete,
    "react": _parse_reaction("react"),
    "unreact": _parse_reaction("unreact"),
}


# --- server frames -----------------------------------------------------------------------


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a Z suffix; naive values are taken as UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode(frame: dict[str, Any]) -> bytes:
    """Serialise a server frame once; the bytes are shared by every recipient."""
    return orjson.dumps(frame)


def error_frame(code: str, message: str, about: dict[str, Any] | None = None) -> dict[str, Any]:
    """An error; `about` names the request it answers (requestType, room, clientId).

    The text stands twice: existing React clients read data.message.
    """
    data = {"message": message, "code": code, **(about or {})}
    return {"type": "error", "message": message, "code": code, **(about or {}), "data": data}


def request_reference(raw: str | bytes) -> dict[str, Any]:
    """What an error should echo of the frame it answers, so that a client can tell which
    of its requests failed: its type, room and clientId, where the frame has them."""
    if not isinstance(raw, str) or not raw.lstrip(" \t\r\n").startswith("{"):
        return {}  # (JSON allows whitespace before the object)
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    about: dict[str, Any] = {}
    for field_name, key in (("type", "requestType"), ("room", "room"), ("clientId", "clientId")):
        value = frame.get(field_name)
        if isinstance(value, str) and len(value) <= 64:
            about[key] = value
    for field_name, key in (("to_user_id", "to"), ("to", "to"), ("with", "with")):
        value = frame.get(field_name)
        if (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and len(value) <= 64):
            about[key] = value
    return about


def welcome_frame(
    user_id: int, username: str, server_time: datetime, rooms: list[dict[str, Any]], conversations: list[dict[str, Any]]
) -> dict[str, Any]:
    """The greeting: who the connection is, and the user's rooms and conversations (the
    first page of each, as `my_rooms` and `conversations` list them)."""
    data = {
        "userId": user_id,
        "username": username,
        "serverTime": format_timestamp(server_time),
        "rooms": rooms,
        "conversations": conversations,
    }
    return {"type": "welcome", "data": data}


def auth_ok_frame(user_id: int, expires_at: float | None) -> dict[str, Any]:
    """The answer to `auth` on an authenticated connection: the new token now counts.

    `expiresAt` is null for a token without `exp` (or one past the year 9999).
    """
    expiry = None
    if expires_at is not None:
        try:
            expiry = format_timestamp(datetime.fromtimestamp(expires_at, UTC))
        except (ValueError, OverflowError, OSError):
            pass
    return {"type": "auth_ok", "data": {"userId": user_id, "expiresAt": expiry}}


def message_frame(data: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message", "data": data}


def dm_frame(data: dict[str, Any]) -> dict[str, Any]:
    return {"type": "dm", "data": data}


def dm_sent_frame(data: dict[str, Any]) -> dict[str, Any]:
    return {"type": "dm_sent", "data": {"to": data["to"], "status": "ok", "message": data}}


def message_edited_frame(event_id: int, data: dict[str, Any]) -> dict[str, Any]:
    """A message was edited (PROTOCOL.md §10): its data as edited, with editedAt."""
    return {"type": "message_edited", "eventId": event_id, "data": data}


def message_deleted_frame(event_id: int, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message_deleted", "eventId": event_id, "data": data}


def reaction_frame(event_id: int, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": "reaction", "eventId": event_id, "data": data}


# The frame of each §10 event, by its type (app/messages.py, StoredEvent).
EVENT_FRAMES = {
    "message_edited": message_edited_frame,
    "message_deleted": message_deleted_frame,
    "reaction": reaction_frame,
}


def listed_users(users: Mapping[int, str], max_users: int) -> list[dict[str, Any]]:
    """join_ack's list of who is online (user id -> name): the first `max_users` of them
    (a crowd's list would cost more than it tells)."""
    return [listed_user(user_id, name) for user_id, name in islice(users.items(), max_users)]


def listed_user(user_id: int, username: str) -> dict[str, Any]:
    """One entry of join_ack's list of who is online."""
    return {"userId": user_id, "username": username}


def join_ack_frame(
    room: str,
    listed: list[dict[str, Any]] | orjson.Fragment,
    online: int,
    members: int,
    last_id: int,
    owner: int | None = None,
) -> dict[str, Any]:
    """The ack of a join: `listed` (listed_users' list, or that list encoded), how many
    are `online` in all, the room's member count, the id of its newest message, and its
    `owner` when it has one (an addition to PROTOCOL.md: who may `remove`)."""
    data = {"room": room, "status": "ok", "users": listed, "online": online, "members": members, "lastId": last_id}
    if owner is not None:
        data["owner"] = owner
    return {"type": "join_ack", "room": room, "data": data}


def left_frame(room: str, reason: str | None = None) -> dict[str, Any]:
    """The end of a membership: by `leave` (no reason), or `reason` "removed" by the owner."""
    if reason is None:
        return {"type": "left", "room": room}
    return {"type": "left", "room": room, "reason": reason}


def invited_frame(room: str, private: bool, description: str, by_user_id: int, by_username: str) -> dict[str, Any]:
    """To every connection of a user another member made a member of the room."""
    by = {"userId": by_user_id, "username": by_username}
    data = {"room": room, "private": private, "description": description, "by": by}
    return {"type": "invited", "room": room, "data": data}


def presence_frame(room: str, event: str, user_id: int, username: str) -> dict[str, Any]:
    return {"type": "presence", "room": room, "data": {"event": event, "userId": user_id, "username": username}}


def typing_frame(room: str, user_id: int, username: str) -> dict[str, Any]:
    return {"type": "typing", "room": room, "data": {"userId": user_id, "username": username}}


def dm_typing_frame(user_id: int, username: str) -> dict[str, Any]:
    """Typing in the DM conversation with the sender: `with` names the conversation."""
    return {"type": "typing", "with": user_id, "data": {"userId": user_id, "username": username}}


def _page_echo(command: Command) -> dict[str, Any]:
    """The page a history answer is for, so that a client can match answers to requests."""
    echo: dict[str, Any] = {"limit": command.limit}
    if command.before is not None:
        echo["before"] = command.before
    if command.after is not None:
        echo["after"] = command.after
    return echo


def room_history_frame(command: Command, messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "room_history", "room": command.room, **_page_echo(command), "data": messages}


def dm_history_frame(
    command: Command, messages: list[dict[str, Any]], events: list[dict[str, Any]] | None = None, more: bool = False
) -> dict[str, Any]:
    """A page of a DM conversation; with `after`, also the §10 event frames since (`events`),
    and `more` when those were cut at their cap (docs/protocol.md, DM catch-up)."""
    frame = {"type": "dm_history", "with": command.to, **_page_echo(command), "data": messages}
    if events is not None:
        frame["events"] = events
        if more:
            frame["more"] = True
    return frame


def conversations_frame(conversations: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "conversations", "data": conversations}


def users_frame(users: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "users", "data": users}


def rooms_frame(rooms: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "rooms", "data": rooms}


def my_rooms_frame(rooms: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "my_rooms", "data": rooms}


def read_frame(
    room: str | None, other: int | None, last_read_id: int, unread: int, mentions: int, counted_up_to: int | None = None
) -> dict[str, Any]:
    """The read state of a room or DM conversation, to every connection of the user.

    `countedUpTo` (an addition to PROTOCOL.md): the newest message id the counts include,
    so that a client counts only later arrivals on top of them.
    """
    where: dict[str, Any] = {"room": room} if room is not None else {"with": other}
    data: dict[str, Any] = {"lastReadId": last_read_id, "unread": unread, "mentions": mentions}
    if counted_up_to is not None:
        data["countedUpTo"] = counted_up_to
    return {"type": "read", **where, "data": data}


def search_frame(query: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "search", "query": query, "data": messages}


# The fields of a message as the earlier server's history listed it, one frame each.
LEGACY_HISTORY_FIELDS = ("id", "fromUser", "username", "content", "timestamp")


def legacy_history_entry(data: dict[str, Any]) -> dict[str, Any]:
    """One message of a history as the earlier server sent it (and its clients render it):
    an untyped frame, at `/` only (PROTOCOL.md §7)."""
    return {name: data[name] for name in LEGACY_HISTORY_FIELDS}


PONG = encode({"type": "pong"})
