"""Group commit: messages sent at the same moment share one transaction and one round trip.

Senders hand a draft to `submit` and wait; one greenlet per process takes everything that
queued up while the previous commit ran, stores it in one transaction (numbered under the
rooms' row locks, announced on the bus inside the same transaction), and only after the
commit hands the stored messages to local delivery. Stored before delivered, always.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gevent
from gevent.event import AsyncResult, Event

from . import event_store, store
from .commits_in_flight import CommitsInFlight
from .db import Pool, SingleConnection
from .errors import ChatError, Unavailable
from .messages import StoredMessage
from .metrics import BATCH_SIZE, STORED_DMS, STORED_ROOM_MESSAGES

log = logging.getLogger(__name__)

# A sender whose draft is in a batch being committed waits past the store timeout for its
# outcome: at most the lane's statement timeout more, and this for the round trips.
UNKNOWN_OUTCOME_GRACE_SECONDS = 5.0
# How often the senders' waits are held against their deadlines: one sweep for all of
# them, not a gevent.Timeout each (a timer started and cancelled per message cost the
# worker 20,000 instructions, 4 % of a message; bench/callgrind.py). A sender is told
# `unavailable` up to this much later than its deadline.
EXPIRY_SWEEP_SECONDS = 0.1


@dataclass
class Pending:
    draft: store.Draft
    origin: object  # the sending connection
    queued_at: float  # time.monotonic() when submitted
    result: AsyncResult = field(default_factory=AsyncResult)


@dataclass(frozen=True)
class Outcome:
    """What became of a submitted draft: the stored message, and whether it was a resend."""

    message: StoredMessage
    duplicate: bool


@dataclass
class Job:
    """Other writes to a lane's channels (edits, reactions): `work(cursor)` run between two
    batches, then `committed(what work returned)`; what that returns (or what either
    raised) is set in `result`."""

    work: Callable[[Any], Any]
    committed: Callable[[Any], Any]
    result: AsyncResult = field(default_factory=AsyncResult)


class Lane:
    """One group-commit loop: a queue of drafts, a greenlet, a database connection."""

    def __init__(self, batcher: Batcher, connection: SingleConnection) -> None:
        self.connection = connection
        self.queue: deque[Pending] = deque()  # in the order submitted, so by queued_at
        self.in_flight: list[Pending] = []  # the batch being committed, in the same order
        self.jobs: deque[Job] = deque()  # run_in_lane's, in the order given
        self.wakeup = Event()
        self.greenlet = gevent.spawn(batcher.run_lane, self)

    def add(self, pending: Pending) -> None:
        self.queue.append(pending)
        self.wakeup.set()


class Batcher:
    """Collects drafts and commits them in groups, in the order they were submitted."""

    def __init__(
        self,
        pool: Pool,
        origin: str,
        notify_channel: Callable[[], str | None],  # asked per batch: None when nobody listens
        on_committed: Callable[[list[StoredMessage]], None],
        max_batch: int,
        timeout_seconds: float,
        pipelines: int = 2,
        known_users: set[int] | None = None,
        local_commits: CommitsInFlight | None = None,  # told of the DMs' commits (Hub.local_commits)
    ) -> None:
        self.pool = pool
        self.local_commits = local_commits or CommitsInFlight()
        self.origin = origin
        self.notify_channel = notify_channel
        self.on_committed = on_committed
        self.max_batch = max_batch
        self.timeout_seconds = timeout_seconds
        # users known to have a row (the process's one set: ChatRuntime.known_users)
        self.known_users = set() if known_users is None else known_users
        # Lanes commit in parallel, each on a connection of its own (autocommit, so a
        # batch never waits for the pool). A room or conversation always takes the same
        # lane, so two batches of this process never wait for the same room's lock.
        self.lanes = [
            Lane(self, SingleConnection(pool.dsn, pool.connect_timeout, setup=self._prepare_lane))
            for _ in range(pipelines)
        ]
        # Holds the senders' deadlines while any sender waits (_sweep_while_waited).
        self.sweeper: gevent.Greenlet | None = None

    def _prepare_lane(self, cur) -> None:
        """Set up a new lane connection: its statement timeout, its prepared statements.

        A batch that cannot finish while its senders wait (a room's row locked by some
        long transaction, say) is cancelled by PostgreSQL, so that no message is stored
        and delivered after its sender was told `unavailable`.
        """
        cur.execute("SET statement_timeout = %s", (f"{round(self.timeout_seconds * 1000)}ms",))
        store.prepare_batch_statements(cur)
        event_store.STATEMENTS.prepare(cur)  # (the store of events: run_in_lane)

    def submit(self, draft: store.Draft, origin: object) -> Outcome:
        """Store a draft; return once it is committed (raise ChatError if it cannot be).

        Told `unavailable`, a sender may send it again (without a clientId: as another
        message), so it is told so only when the draft will never be stored: while it
        is still queued, or when its batch failed. Each statement of a batch being
        committed (up to three) ends within the lanes' statement timeout unless the
        connection hangs: a sender waits the same time again, plus a grace; past that,
        or when the connection is lost mid-commit, the outcome is unknown, and said so
        (or, for a lost connection, "retry later": a resend with its clientId is safe).
        """
        pending = Pending(draft, origin, time.monotonic())
        self.lane_of(draft.channel).add(pending)
        if self.sweeper is None:
            self.sweeper = gevent.spawn_later(EXPIRY_SWEEP_SECONDS, self._sweep_while_waited)
        return pending.result.get()  # (or raises what the batch or the sweep set)

    def lane_of(self, channel: tuple) -> Lane:
        """The lane that commits the channel's messages (a room or conversation: always the same)."""
        return self.lanes[hash(channel) % len(self.lanes)]

    def run_in_lane(self, channel: tuple, work: Callable[[Any], Any], committed: Callable[[Any], Any]) -> AsyncResult:
        """Run `work(cursor)` as one transaction on the connection of the lane that commits
        the channel's messages, between two of its batches, then `committed(its outcome)`
        before the lane's next batch (so what it delivers is delivered in commit order, as
        a batch's messages are). What `committed` returns, or what raised, comes in the result.

        For other writes that take the channel's row lock (app/event_batch.py: edits,
        deletes, reactions). Run by the lane, they never wait for its batches on that lock,
        nor its batches for them. On a connection of its own, a write to rooms of both
        lanes would hold one lane's room locks while it waited for the other lane's batch,
        and so chain the two lanes' commits together.
        """
        job = Job(work, committed)
        lane = self.lane_of(channel)
        lane.jobs.append(job)
        lane.wakeup.set()
        return job.result

    def _sweep_while_waited(self) -> None:
        """Tell the senders past their deadline, until nobody waits (submit starts it again).

        A sweep that fails is tried again at the next: the senders wait with no timer of
        their own, so a sweeper that stopped while they wait would leave them waiting.
        """
        try:
            while True:
                try:
                    if not self._expire_waits(time.monotonic()):
                        return
                except Exception:
                    log.exception("checking the senders' deadlines failed")
                gevent.sleep(EXPIRY_SWEEP_SECONDS)
        finally:
            self.sweeper = None

    def _expire_waits(self, now: float) -> bool:
        """Answer `unavailable` to each sender past its deadline; whether any sender still waits.

        Queued past the store timeout: withdrawn, never to be stored. In a batch being
        committed past twice that and the grace: the outcome is unknown, and said so.
        """
        waiting = False
        for lane in self.lanes:
            queue = lane.queue
            while queue and now - queue[0].queued_at >= self.timeout_seconds:
                queue.popleft().result.set_exception(
                    Unavailable("storing the message timed out, nothing was stored: retry later")
                )
            in_flight = lane.in_flight
            # (the oldest first: when it is not late, none is)
            if in_flight and now - in_flight[0].queued_at >= 2 * self.timeout_seconds + UNKNOWN_OUTCOME_GRACE_SECONDS:
                for pending in in_flight:
                    if not pending.result.ready():
                        pending.result.set_exception(
                            Unavailable(
                                "storing the message timed out and it may yet be stored: "
                                "send it again with the same clientId"
                            )
                        )
            waiting = waiting or bool(queue) or bool(in_flight)
        return waiting

    def run_lane(self, lane: Lane) -> None:
        while True:
            lane.wakeup.wait()
            lane.wakeup.clear()
            while lane.queue or lane.jobs:
                # The jobs given so far, then a batch: neither kind waits more than one
                # turn of the other.
                for _ in range(len(lane.jobs)):
                    self._run_job(lane.connection, lane.jobs.popleft())
                if lane.queue:
                    self._commit_next(lane)

    @staticmethod
    def _run_job(connection: SingleConnection, job: Job) -> None:
        try:
            outcome = connection.run(job.work)
        except Exception as exc:  # (not known to be committed: its caller decides what it means)
            job.result.set_exception(exc)
            return
        try:
            job.result.set(job.committed(outcome))
        except Exception as exc:
            log.exception("after a lane's job committed")
            job.result.set_exception(exc)

    def _commit_next(self, lane: Lane) -> None:
        """Take the next batch of the lane's queue and commit it."""
        batch = [lane.queue.popleft() for _ in range(min(len(lane.queue), self.max_batch))]
        lane.in_flight = batch
        # Only DMs: their sending connection gets another frame than the rest.
        conversations = {p.draft.channel for p in batch if p.draft.to_user is not None}
        self.local_commits.begin(conversations)
        try:
            self._commit_batch(lane.connection, batch)
        except Exception:
            log.exception("group commit failed unexpectedly")
            for pending in batch:
                if not pending.result.ready():
                    pending.result.set_exception(ChatError("internal error while storing"))
        finally:
            lane.in_flight = []
            self.local_commits.end(conversations)

    def _commit_batch(self, connection: SingleConnection, batch: list[Pending]) -> None:
        """Store a batch, then deliver and answer.

        A batch whose statement failed (nothing committed) is stored again one by one, so
        that one bad draft sinks no other.
        """
        try:
            stored = self._store(connection, batch)
        except ChatError as exc:
            for pending in batch:
                pending.result.set_exception(exc)
            return
        except Exception:
            if len(batch) == 1:
                log.exception("storing a message failed")
                batch[0].result.set_exception(ChatError("internal error while storing"))
                return
            log.warning("a group commit of %d failed; storing them one by one", len(batch))
            for pending in batch:
                self._commit_batch(connection, [pending])
            return
        # Committed: from here on nothing may fail the batch or store it again.
        self._answer(batch, *stored)

    def _store(
        self, connection: SingleConnection, batch: list[Pending]
    ) -> tuple[list[Pending], dict[int, store.BatchResult]]:
        """One statement (one round trip, its own transaction) for the whole batch.

        Returns the pendings whose drafts it stored (the first of each (sender, clientId))
        and what became of each, by position; one missing lost a race for its clientId.
        """
        unknown = {p.draft.from_user: p.draft.username for p in batch if p.draft.from_user not in self.known_users}
        if unknown:
            with self.pool.autocommit() as cur:
                for user_id, username in unknown.items():
                    store.ensure_user(cur, store.Identity(user_id, username))
            self.known_users.update(unknown)
        # The same resend twice in one batch: store the first, answer both with it.
        seen: set[tuple] = set()
        unique: list[Pending] = []
        for pending in batch:
            key = (pending.draft.from_user, pending.draft.client_id)
            if pending.draft.client_id is None or key not in seen:
                seen.add(key)
                unique.append(pending)
        drafts = [p.draft for p in unique]
        results = connection.run(lambda cur: store.store_batch(cur, drafts, self.notify_channel(), self.origin))
        return unique, results

    def _answer(self, batch: list[Pending], unique: list[Pending], results: dict[int, store.BatchResult]) -> None:
        """Deliver a committed batch's new messages and answer their senders, then the resends.

        The resends are answered with their stored messages, which takes a query of its own.
        """
        outcomes: dict[int, Outcome] = {}
        earlier: list[tuple[Pending, store.BatchResult | None]] = []
        for index, pending in enumerate(unique):
            result = results.get(index)
            if result is None or result.duplicate:
                earlier.append((pending, result))
            else:
                message = store.draft_message(pending.draft, result)
                message.origin_connection = pending.origin
                outcomes[id(pending)] = Outcome(message, duplicate=False)
        fresh = sorted((outcome.message for outcome in outcomes.values()), key=lambda m: m.id)
        BATCH_SIZE.observe(len(batch))
        dms = sum(message.is_dm for message in fresh)
        STORED_DMS.value += dms
        STORED_ROOM_MESSAGES.value += len(fresh) - dms
        # Deliver before answering the senders, so a sender sees its own message first.
        try:
            self.on_committed(fresh)
        except Exception:
            log.exception("delivering a committed batch failed")  # the gates' gap fills repair it
        self._settle(batch, outcomes)
        if not earlier:
            return
        try:
            outcomes.update(self._find_earlier(earlier))
        except ChatError as exc:
            # The resends are stored; sent again, they are found then.
            self._settle(batch, outcomes, failed=exc)
        else:
            self._settle(batch, outcomes, failed=ChatError("internal error while storing"))

    @staticmethod
    def _settle(batch: list[Pending], outcomes: dict[int, Outcome], failed: ChatError | None = None) -> None:
        """Answer the senders whose outcome is known (with `failed`: the others too, so)."""
        first_by_key: dict[tuple, Pending] = {}
        for pending in batch:
            key = (pending.draft.from_user, pending.draft.client_id)
            first = first_by_key.setdefault(key, pending) if pending.draft.client_id is not None else pending
            if pending.result.ready():
                continue
            outcome = outcomes.get(id(first))
            if outcome is None:
                if failed is not None:
                    pending.result.set_exception(failed)
            elif first is pending:
                pending.result.set(outcome)
            else:  # the same resend twice in one batch: answered with the first's message
                pending.result.set(Outcome(outcome.message, duplicate=True))

    def _find_earlier(self, earlier: list[tuple[Pending, store.BatchResult | None]]) -> dict[int, Outcome]:
        """The stored messages that resends name.

        By id, or by (sender, clientId) for a draft that lost the race for its clientId to
        another process.
        """
        outcomes: dict[int, Outcome] = {}
        by_id = {result.id: pending for pending, result in earlier if result is not None}
        lookups = [pending for pending, result in earlier if result is None]
        with self.pool.autocommit() as cur:
            for message in store.messages_by_id(cur, list(by_id)):
                outcomes[id(by_id[message.id])] = Outcome(message, duplicate=True)
            keys = [(p.draft.from_user, p.draft.client_id) for p in lookups]
            found = store.find_by_client_ids(cur, keys)
            for pending, key in zip(lookups, keys, strict=True):
                outcomes[id(pending)] = Outcome(found[key], duplicate=True)
        return outcomes
