"""The reads of many resuming joins at once: member counts, owners and first replay pages.

A client resuming after a restart sends `join` with `since` for each of its rooms, all of
which its connection receives already (app/membership.py, Memberships._rejoin). Each needs
the room's member count for its join_ack and the messages and events between its `since`
and its floor for the replay: three queries. A crowd reconnecting at once sends tens of
thousands; queued here (app/batched.py), they are read for many joins a round trip, and the
pool stays free for the rest.
"""

from __future__ import annotations

from typing import NamedTuple

from .batched import Batched
from .db import BigintArray, Pool, TextArray
from .event_store import SELECT_EVENTS, row_to_event
from .messages import StoredMessage
from .store import SELECT_MESSAGES, row_to_message

# Joins read by one set of queries at most, and greenlets reading at once.
BATCH_MAX = 500
READERS_MAX = 2

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
    page: list[StoredMessage]


class ResumeReads(Batched[tuple[str, int, int], Resumed]):
    """Queue of (room, since, up_to) reads, answered many a round trip."""

    def __init__(self, pool: Pool, page_size: int) -> None:
        super().__init__(BATCH_MAX, READERS_MAX)
        self.pool = pool
        self.page_size = page_size

    def read(self, room: str, since: int, up_to: int) -> Resumed:
        """The room's member count and the first page of what lies in (since, up_to], in id order.

        Raises what the read raised (ChatError when the database is away).
        """
        return self.ask((room, since, up_to))

    def answer_batch(self, batch: list[tuple[str, int, int]]) -> list[Resumed]:
        parameters = {
            "rooms": TextArray(room for room, _, _ in batch),
            "sinces": BigintArray(since for _, since, _ in batch),
            "up_tos": BigintArray(up_to for _, _, up_to in batch),
            "limit": self.page_size,
        }
        pages: list[list[StoredMessage]] = [[] for _ in batch]
        with self.pool.autocommit() as cur:
            cur.execute(_COUNTS, parameters)
            counts = {n: (members, owner) for n, members, owner in cur.fetchall()}
            # Only a join with something to replay needs its page.
            if any(since < up_to for _, since, up_to in batch):
                cur.execute(_MESSAGES, parameters)
                for row in cur:
                    pages[row[0] - 1].append(row_to_message(row[1:]))
                cur.execute(_EVENTS, parameters)
                for row in cur:
                    pages[row[0] - 1].append(row_to_event(row[1:]))
        answers = []
        for n, page in enumerate(pages, start=1):
            page.sort(key=lambda item: item.id)
            answers.append(Resumed(*counts[n], page[: self.page_size]))
        return answers
