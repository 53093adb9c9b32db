"""A stored message as it travels inside the server: wire data, encoded once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import protocol
from .wsframe import text_frame

ChannelKey = tuple  # ("r", room) or ("d", low_user_id, high_user_id)


def dm_channel(a: int, b: int) -> ChannelKey:
    return ("d", min(a, b), max(a, b))


def room_channel(room: str) -> ChannelKey:
    return ("r", room)


@dataclass(eq=False)
class StoredMessage:
    """A committed room message or DM with its per-channel sequence number."""

    id: int
    seq: int
    data: dict[str, Any]  # exactly the wire `data` object of PROTOCOL.md §3
    # Which connection sent it, when that connection is in this process: it gets dm_sent.
    origin_connection: Any = None
    _frame: bytes | None = field(default=None, repr=False)
    # The room it goes to (None for a DM): read once per receiver by the fan-out.
    room: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.room is None:
            self.room = self.data.get("room")

    @property
    def is_dm(self) -> bool:
        return "to" in self.data

    @property
    def channel(self) -> ChannelKey:
        if self.is_dm:
            return dm_channel(self.data["fromUser"], self.data["to"])
        return room_channel(self.data["room"])

    @property
    def wire_frame(self) -> bytes:
        """The WebSocket frame for every receiver (`message` or `dm`), built once."""
        if self._frame is None:
            builder = protocol.dm_frame if self.is_dm else protocol.message_frame
            self._frame = text_frame(protocol.encode(builder(self.data)))
        return self._frame


@dataclass(eq=False, kw_only=True)
class StoredEvent(StoredMessage):
    """A committed edit, delete or reaction (PROTOCOL.md §10): `id` is its eventId, `seq`
    its place in the message's channel, `data` the frame's data. It travels through gates,
    gap fills and replays like a message; its channel is explicit, since a reaction's data
    does not name it."""

    kind: str  # the frame type: message_edited, message_deleted or reaction
    event_channel: ChannelKey

    def __post_init__(self) -> None:
        if self.event_channel[0] == "r":
            self.room = self.event_channel[1]

    @property
    def is_dm(self) -> bool:
        return self.event_channel[0] == "d"

    @property
    def channel(self) -> ChannelKey:
        return self.event_channel

    @property
    def wire_frame(self) -> bytes:
        """The event's frame, the same for every receiver (the actor's tabs included)."""
        if self._frame is None:
            self._frame = text_frame(protocol.encode(protocol.EVENT_FRAMES[self.kind](self.id, self.data)))
        return self._frame


def message_data(
    id: int,
    from_user: int,
    username: str,
    content: str,
    timestamp: str,
    room: str | None = None,
    to_user: int | None = None,
    client_id: str | None = None,
    edited_at: str | None = None,
    deleted: bool = False,
    reactions: dict[str, list[int]] | None = None,
) -> dict[str, Any]:
    """The wire `data` of a message (room) or dm (to), clientId only when there is one;
    as it is now: `editedAt` once edited, `deleted` (and no content) once deleted,
    `reactions` while it has some (PROTOCOL.md §10)."""
    data: dict[str, Any] = {"id": id, "fromUser": from_user, "username": username}
    if to_user is not None:
        data["to"] = to_user
    data["content"] = content
    data["timestamp"] = timestamp
    if room is not None:
        data["room"] = room
    if client_id is not None:
        data["clientId"] = client_id
    if edited_at is not None:
        data["editedAt"] = edited_at
    if deleted:
        data["deleted"] = True
        data["content"] = ""
    if reactions:
        data["reactions"] = reactions
    return data
