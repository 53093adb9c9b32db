"""The chat error hierarchy: every instance maps to one wire `code` of PROTOCOL.md §4."""

from __future__ import annotations


class ChatError(Exception):
    """A request that could not be served; becomes an `error` frame with `code`."""

    code = "internal"

    def __init__(self, message: str = "internal error") -> None:
        super().__init__(message)
        self.message = message


class BadJson(ChatError):
    code = "bad_json"


class UnknownType(ChatError):
    code = "unknown_type"


class Invalid(ChatError):
    """A missing or ill-typed field; the message names the field."""

    code = "invalid"


class NotJoined(ChatError):
    code = "not_joined"


class NotFound(ChatError):
    code = "not_found"


class TooLarge(ChatError):
    code = "too_large"


class RateLimited(ChatError):
    """Too many frames, or too many rooms created: slow down."""

    code = "rate_limited"


class Unauthorized(ChatError):
    code = "unauthorized"


class Unavailable(ChatError):
    """The database cannot be reached right now; the client should retry later."""

    code = "unavailable"


class Forbidden(ChatError):
    """Allowed to see it, not to change it: someone else's message (PROTOCOL.md §10), a
    room's members when not its owner (§8)."""

    code = "forbidden"
