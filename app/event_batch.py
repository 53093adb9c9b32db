"""Edits, deletes and reactions sent at the same moment, decided together and stored together.

An event decided and stored in a transaction of its own would hold its channel's row lock
across round trips and pay a commit (a WAL flush) each, while the group commit of the
channel's messages waited for that lock. Here a batch takes two round trips whatever its
size, and holds no lock between them:

1. read every request's message with what deciding it needs (event_store.read_messages);
2. decide each in Python (app/events.py: not found, forbidden, a resend answered with the
   event before it, or an event to store);
3. store the events to store (event_store.store_events), under the messages' and
   channels' row locks, each only if its message is still as it was decided on
   (event_store._STORE says what that is per kind). One that is not (changed by another
   worker meanwhile) is decided again.

The store is one statement for each group-commit lane whose rooms and conversations the
events are in, run by that lane between two of its batches (Batcher.run_in_lane): so an
event and the messages of its channel never wait for each other's row locks in this
process, and the lane delivers the events it stored before its next batch's messages.

Only after the commit are the new events delivered, in id order, and their senders answered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple

from gevent.event import AsyncResult

from . import event_store
from .batched import Batched
from .batcher import Batcher, Lane
from .db import Pool
from .errors import ChatError, Unavailable
from .messages import StoredEvent
from .protocol import Command

log = logging.getLogger(__name__)

# A request decided again this many times, its message changed by others each time, is
# told to retry rather than kept waiting (it takes an edit of a message that other workers
# keep reacting to, or one user's devices reacting without pause).
DECIDE_ROUNDS_MAX = 10
# Requests taken into one batch: a round's statement carries them as one JSON parameter.
BATCH_MAX = 100
# Batches under way at once: one is read and decided (on a pooled connection) while the
# other is stored (in the lanes).
RUNNERS_MAX = 2


class EventRequest(NamedTuple):
    """An edit, delete, react or unreact, and who asks."""

    user_id: int
    username: str
    command: Command


class Answer(NamedTuple):
    """What a request came to: the event it stored, or (`fresh` False) the earlier one
    that made the message as asked (a resend)."""

    event: StoredEvent
    fresh: bool


Decide = Callable[[object, EventRequest, event_store.Read | None], "StoredEvent | event_store.Decided"]


def split_round(batch: list[EventRequest], waiting: list[int]) -> tuple[list[int], list[int]]:
    """The requests of the next round, and those that wait for a later one, in order.

    One statement stores a round, and sees each message as it was before it: an edit or a
    delete goes alone of its message (it rewrites the row, or its frame shows it), and a
    reaction of one user and emoji goes at most once (a react and its unreact need the one
    decided on what the other did). Reactions of others to one message share a round.
    """
    taken: list[int] = []
    later: list[int] = []
    alone: set[int] = set()  # messages this round edits or deletes
    reacted: set[int] = set()  # messages this round reacts to
    reactions: set[tuple] = set()  # (message, user, emoji) of this round's reactions
    for index in waiting:
        request = batch[index]
        message_id = request.command.message_id
        if request.command.type in ("edit", "delete"):
            free = message_id not in alone and message_id not in reacted
            if free:
                alone.add(message_id)
        else:
            key = (message_id, request.user_id, request.command.emoji)
            free = message_id not in alone and key not in reactions
            if free:
                reacted.add(message_id)
                reactions.add(key)
        (taken if free else later).append(index)
    return taken, later


class EventBatches(Batched[EventRequest, Answer]):
    """The queue of event requests; `decide` is app/events.py's (cursor, request, read)
    -> the earlier event answering it, or the event to store; it raises ChatError for a
    request refused."""

    def __init__(
        self,
        pool: Pool,
        lanes: Batcher,  # whose lanes store the events (run_in_lane)
        decide: Decide,
        deliver: Callable[[StoredEvent], None],
        notify_channel: Callable[[], str | None],  # asked per batch: None when nobody listens
        origin: str,
    ) -> None:
        super().__init__(BATCH_MAX, RUNNERS_MAX)
        self.pool = pool
        self.lanes = lanes
        self.decide = decide
        self.deliver = deliver
        self.notify_channel = notify_channel
        self.origin = origin

    def answer_batch(self, batch: list[EventRequest]) -> list[Answer | Exception]:
        answers: list[Answer | Exception | None] = [None] * len(batch)
        rounds = [0] * len(batch)
        waiting = list(range(len(batch)))
        while waiting:
            taken, later = split_round(batch, waiting)
            changed = self._round_guarded(batch, taken, answers)
            for index in changed:
                rounds[index] += 1
                if rounds[index] >= DECIDE_ROUNDS_MAX:
                    answers[index] = Unavailable("the message keeps changing under this request: retry later")
            waiting = sorted(later + [i for i in changed if answers[i] is None])
        return answers  # type: ignore[return-value]  (every one set by now)

    def _round_guarded(self, batch: list[EventRequest], indexes: list[int], answers: list) -> list[int]:
        """Decide and store a round's requests (split_round), then deliver what it stored;
        returns those whose message changed before their event was stored, to decide again.

        A failure before a commit is told to the requests it leaves unstored: the database
        away to all of them (an event whose commit was not confirmed is safe to send again:
        a resend changes nothing); anything else, for one request at a time, so that one
        bad request sinks no other.
        """
        try:
            to_store = self._decide(batch, indexes, answers)
        except Exception as exc:
            return self._failed(batch, indexes, answers, exc)
        # One statement per lane, all under way at once.
        by_lane: dict[Lane, list[tuple[int, event_store.Decided]]] = {}
        for index, decided in to_store:
            by_lane.setdefault(self.lanes.lane_of(decided.read.message.channel), []).append((index, decided))
        stores = [(group, self._store_in_lane(group, answers)) for group in by_lane.values()]
        changed: list[int] = []
        for group, outcome in stores:
            try:
                changed += outcome.get()
            except Exception as exc:
                changed += self._failed(batch, [index for index, _ in group], answers, exc)
        return changed

    def _failed(self, batch: list[EventRequest], indexes: list[int], answers: list, exc: Exception) -> list[int]:
        """Answer requests whose deciding or storing raised `exc` (none of them known to be
        stored), or, for an unexpected failure of several, try each again alone; returns
        those to decide again."""
        if isinstance(exc, ChatError):
            failed = exc
        elif len(indexes) > 1:
            log.warning("a batch of %d events failed (%r); storing them one by one", len(indexes), exc)
            return [i for index in indexes for i in self._round_guarded(batch, [index], answers)]
        else:
            log.error("storing an event failed", exc_info=exc)
            failed = ChatError("internal error while storing")
        for index in indexes:
            if answers[index] is None:
                answers[index] = failed
        return []

    def _decide(
        self, batch: list[EventRequest], indexes: list[int], answers: list
    ) -> list[tuple[int, event_store.Decided]]:
        """Read and decide these requests, answering the refused and the resends; returns
        the events to store, by request index."""
        requests = [batch[i] for i in indexes]
        to_store: list[tuple[int, event_store.Decided]] = []
        with self.pool.autocommit() as cur:
            reads = event_store.read_messages(
                cur, [(r.command.message_id, r.user_id, r.command.emoji) for r in requests]
            )
            for index, request, read in zip(indexes, requests, reads, strict=True):
                try:
                    decided = self.decide(cur, request, read)
                except ChatError as exc:
                    answers[index] = exc
                    continue
                if isinstance(decided, StoredEvent):
                    answers[index] = Answer(decided, fresh=False)
                else:
                    to_store.append((index, decided))
        return to_store

    def _store_in_lane(self, group: list[tuple[int, event_store.Decided]], answers: list) -> AsyncResult:
        """Store a group of decided events, all of one lane's channels, in that lane, and
        deliver them there once committed; the requests whose message changed meanwhile
        (to decide again) come in the result."""
        decided = [d for _, d in group]
        notify_channel = self.notify_channel()
        return self.lanes.run_in_lane(
            decided[0].read.message.channel,
            lambda cur: event_store.store_events(cur, decided, notify_channel, self.origin),
            lambda stored: self._committed(group, stored, answers),
        )

    def _committed(
        self, to_store: list[tuple[int, event_store.Decided]], stored: dict[int, StoredEvent], answers: list
    ) -> list[int]:
        """Deliver the stored events in id order and answer their requests; returns those
        not stored (their message changed since it was read). Nothing here may fail these
        events or store them again: they are committed."""
        events = []
        changed = []
        for position, (index, _) in enumerate(to_store):
            event = stored.get(position)
            if event is None:
                changed.append(index)
                continue
            answers[index] = Answer(event, fresh=True)
            events.append(event)
        for event in sorted(events, key=lambda e: e.id):
            try:
                self.deliver(event)
            except Exception:
                log.exception("delivering a stored event failed")  # the gates' gap fills repair it
        return changed
