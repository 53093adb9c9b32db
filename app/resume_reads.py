"""The reads of many resuming joins at once: member counts, owners and first replay pages.

A client resuming after a restart sends `join` with `since` for each of its rooms, all of
which its connection receives already (app/membership.py, Memberships._rejoin). Each needs
the room's member count for its join_ack and the messages and events between its `since`
and its floor for the replay: three queries. A crowd reconnecting at once sends tens of
thousands; queued here (app/batched.py), they are read for many joins a round trip, and the
pool stays free for the rest.

The members of a room come back with the same `since` (the last message they all saw) and
the same floor (where the room stood here when their connections registered): each of
them would read, decode and encode the same page. A page is kept (RecentPages) and handed
to the others: the replay of a room's missed messages is read once per room, not once per
member.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

from .batched import Batched
from .db import BigintArray, Pool, TextArray
from .event_store import SELECT_EVENTS, row_to_event
from .messages import StoredMessage
from .store import SELECT_MESSAGES, row_to_message

# Joins read by one set of queries at most, and greenlets reading at once.
BATCH_MAX = 500
READERS_MAX = 2
# Pages kept for the other members, counted in messages and events (a few kilobytes each
# with their frames): a crowd of 5,000 resuming 20 rooms each holds 10,000.
KEPT_ITEMS_MAX = 20_000
# How long a page is handed out. Changes the server makes are safe at any age (see
# RecentPages); this bounds those made behind its back: the existing backend shares the
# tables and may delete a message row outright, with no event.
KEPT_SECONDS = 30.0

# A first replay page: never changed once read, so one is shared by every join it answers.
Page = tuple[StoredMessage, ...]

_REQUESTS = (
    "unnest(%(rooms)s::text[], %(sinces)s::bigint[], %(up_tos)s::bigint[]) WITH ORDINALITY AS r(room, since, up_to, n)"
)
_COUNTS = f"""SELECT r.n, (SELECT count(*) FROM chat_members c WHERE c.room = r.room),
    (SELECT c.user_id FROM chat_members c WHERE c.room = r.room AND c.role = 'owner' ORDER BY c.user_id LIMIT 1)
    FROM {_REQUESTS}"""
_MESSAGES = f"""SELECT r.n, page.* FROM {_REQUESTS} CROSS JOIN LATERAL (
    {SELECT_MESSAGES} WHERE m.room = r.room AND m.id > r.since AND m.id <= r.up_to ORDER BY m.id LIMIT %(limit)s
) AS page"""
_EVENTS = f"""SELECT r.n, page.* FROM {_REQUESTS} CROSS JOIN LATERAL (
    {SELECT_EVENTS} WHERE e.room = r.room AND e.id > r.since AND e.id <= r.up_to ORDER BY e.id LIMIT %(limit)s
) AS page"""


class Resumed(NamedTuple):
    """A room's member count and owner, and its messages and events in (since, up_to], the first page."""

    members: int
    owner: int | None  # None for a room made by `join`
    page: Page
    # the room's last event released here when the page was read (Hub.room_last_event)
    read_after_event: int


class RecentPages:
    """First replay pages by (room, since, floor), the most recent kept, each with the
    room's last event released here when it was read.

    A page holds what lies in (since, floor], and the floor is an id this process released
    in the room's order, so every entry up to it was committed when the page was read, and
    every later change of the room (a message, or an edit, delete or reaction of an older
    one) is an entry above the floor, which each connection with that floor gets live. Live
    means perhaps before its replay, though: an edit released before a join must not be
    followed by the message as it stood before the edit. So a join replays a page only if
    no event of the room was released here since the page was read (Memberships._rejoin
    checks, as it starts holding the room's live frames back); else it reads afresh. The
    same check covers a page read for the join itself, ahead of its turn. Pages are shared,
    so their messages' frames are encoded once for every member.
    """

    def __init__(
        self,
        items_max: int = KEPT_ITEMS_MAX,
        seconds: float = KEPT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.items_max = items_max
        self.seconds = seconds
        self.clock = clock
        # key -> (read at, the room's last event then, the page)
        self._pages: OrderedDict[tuple[str, int, int], tuple[float, int, Page]] = OrderedDict()
        self._items = 0

    def get(self, key: tuple[str, int, int]) -> tuple[Page, int] | None:
        """The page kept for the key and the room's last event when it was read, or None."""
        kept = self._pages.get(key)
        if kept is None:
            return None
        read_at, last_event, page = kept
        if self.clock() - read_at > self.seconds:
            self._forget(key)
            return None
        return page, last_event

    def keep(self, key: tuple[str, int, int], page: Page, last_event: int) -> None:
        """Keep a page just read, with the room's last event released here before the read."""
        if key in self._pages:
            self._forget(key)
        if len(page) > self.items_max:
            return
        self._pages[key] = (self.clock(), last_event, page)
        self._items += len(page)
        while self._items > self.items_max:
            self._forget(next(iter(self._pages)))

    def _forget(self, key: tuple[str, int, int]) -> None:
        _, _, page = self._pages.pop(key)
        self._items -= len(page)


class ResumeReads(Batched[tuple[str, int, int], Resumed]):
    """Queue of (room, since, up_to) reads, answered many a round trip."""

    def __init__(self, pool: Pool, page_size: int, last_event: Callable[[str], int] = lambda room: 0) -> None:
        super().__init__(BATCH_MAX, READERS_MAX)
        self.pool = pool
        self.page_size = page_size
        # room -> its last event released here (Hub.room_last_event)
        self.last_event = last_event
        self.recent = RecentPages()

    def read(self, room: str, since: int, up_to: int) -> Resumed:
        """The room's member count and the first page of what lies in (since, up_to], in id order.

        Raises what the read raised (ChatError when the database is away).
        """
        return self.ask((room, since, up_to))

    def answer_batch(self, batch: list[tuple[str, int, int]]) -> list[Resumed]:
        # Only a join with something to replay needs its page, and only one not kept, or
        # kept from before an event of its room (which its join would refuse).
        kept = [self._kept(key) if key[1] < key[2] else ((), 0) for key in batch]
        missing = list(dict.fromkeys(key for key, page in zip(batch, kept, strict=True) if page is None))
        with self.pool.autocommit() as cur:
            cur.execute(_COUNTS, self._parameters(batch))
            counts = {n: (members, owner) for n, members, owner in cur.fetchall()}
            read = self._read_pages(cur, missing) if missing else {}
        answers = []
        for n, (key, page) in enumerate(zip(batch, kept, strict=True), start=1):
            answers.append(Resumed(*counts[n], *(page if page is not None else read[key])))
        return answers

    def _kept(self, key: tuple[str, int, int]) -> tuple[Page, int] | None:
        """The kept page of the key and its stamp, if no event of its room came since it was read."""
        kept = self.recent.get(key)
        return kept if kept is not None and kept[1] == self.last_event(key[0]) else None

    def _read_pages(self, cur, keys: list[tuple[str, int, int]]) -> dict[tuple[str, int, int], tuple[Page, int]]:
        """The first page of each key, messages and events in id order, and the room's last
        event before the read; kept for the next."""
        last_events = [self.last_event(room) for room, _, _ in keys]  # before the snapshot
        pages: list[list[StoredMessage]] = [[] for _ in keys]
        parameters = self._parameters(keys)
        cur.execute(_MESSAGES, parameters)
        for row in cur:
            pages[row[0] - 1].append(row_to_message(row[1:]))
        cur.execute(_EVENTS, parameters)
        for row in cur:
            pages[row[0] - 1].append(row_to_event(row[1:]))
        read = {}
        for key, page, last_event in zip(keys, pages, last_events, strict=True):
            page.sort(key=lambda item: item.id)
            read[key] = (tuple(page[: self.page_size]), last_event)
            self.recent.keep(key, *read[key])
        return read

    def _parameters(self, keys: list[tuple[str, int, int]]) -> dict:
        return {
            "rooms": TextArray(room for room, _, _ in keys),
            "sinces": BigintArray(since for _, since, _ in keys),
            "up_tos": BigintArray(up_to for _, _, up_to in keys),
            "limit": self.page_size,
        }
