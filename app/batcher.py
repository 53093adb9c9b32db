"""Group commit: messages sent at the same moment share one transaction and one round trip.

Senders hand a draft to `submit` and wait; one greenlet per process takes everything that
queued up while the previous commit ran, stores it in one transaction (numbered under the
rooms' row locks, announced on the bus inside the same transaction), and only after the
commit hands the stored messages to local delivery. Stored before delivered, always.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import gevent
from gevent.event import AsyncResult, Event

from . import store
from .db import Pool
from .errors import ChatError, Unavailable
from .messages import StoredMessage
from .metrics import BATCH_SIZE, MESSAGES_STORED

log = logging.getLogger(__name__)


@dataclass
class Pending:
    draft: store.Draft
    origin: object  # the sending connection
    result: AsyncResult = field(default_factory=AsyncResult)


@dataclass(frozen=True)
class Outcome:
    """What became of a submitted draft: the stored message, and whether it was a resend."""

    message: StoredMessage
    duplicate: bool


class Batcher:
    """Collects drafts and commits them in groups, in the order they were submitted."""

    def __init__(
        self,
        pool: Pool,
        origin: str,
        notify_channel: str | None,
        on_committed: Callable[[list[StoredMessage]], None],
        max_batch: int,
        timeout_seconds: float,
    ) -> None:
        self.pool = pool
        self.origin = origin
        self.notify_channel = notify_channel
        self.on_committed = on_committed
        self.max_batch = max_batch
        self.timeout_seconds = timeout_seconds
        self.queue: deque[Pending] = deque()
        self.wakeup = Event()
        self.known_users: set[int] = set()
        self.greenlet = gevent.spawn(self._run)

    def submit(self, draft: store.Draft, origin: object) -> Outcome:
        """Store a draft; return once it is committed (raise ChatError if it cannot be)."""
        pending = Pending(draft, origin)
        self.queue.append(pending)
        self.wakeup.set()
        try:
            return pending.result.get(timeout=self.timeout_seconds)
        except gevent.Timeout:
            raise Unavailable("storing the message timed out, retry later") from None

    def _run(self) -> None:
        while True:
            self.wakeup.wait()
            self.wakeup.clear()
            while self.queue:
                batch = [self.queue.popleft() for _ in range(min(len(self.queue), self.max_batch))]
                try:
                    self._commit_batch(batch)
                except Exception:
                    log.exception("group commit failed unexpectedly")
                    for pending in batch:
                        if not pending.result.ready():
                            pending.result.set_exception(ChatError("internal error while storing"))

    def _commit_batch(self, batch: list[Pending]) -> None:
        try:
            self._store(batch)
        except Unavailable as exc:
            for pending in batch:
                pending.result.set_exception(exc)
        except ChatError as exc:
            for pending in batch:
                pending.result.set_exception(exc)
        except Exception:
            if len(batch) == 1:
                log.exception("storing a message failed")
                batch[0].result.set_exception(ChatError("internal error while storing"))
                return
            # One bad draft must not sink the others: store them one by one.
            log.warning("a group commit of %d failed; storing them one by one", len(batch))
            for pending in batch:
                self._commit_batch([pending])

    def _store(self, batch: list[Pending]) -> None:
        """One transaction for the whole batch; retried once if the connection was stale."""
        for attempt in (1, 2):
            reached_commit = False
            try:
                with self.pool.transaction() as cur:
                    outcomes = self._write(cur, batch)
                    reached_commit = True
                break
            except Unavailable:
                # A connection that died before COMMIT was sent stored nothing: try a
                # fresh one once (the pool dropped the stale ones). After COMMIT was sent
                # the outcome is unknown, and only a resend with its clientId is safe.
                if reached_commit or attempt == 2:
                    raise
        self.known_users.update(p.draft.from_user for p in batch)
        fresh = [o.message for o in outcomes.values() if not o.duplicate]
        fresh.sort(key=lambda m: m.id)
        BATCH_SIZE.observe(len(batch))
        for message in fresh:
            MESSAGES_STORED.labels("dm" if message.is_dm else "room").inc()
        # Deliver before answering the senders, so a sender sees its own message first.
        self.on_committed(fresh)
        for pending in batch:
            pending.result.set(outcomes[id(pending)])

    def _write(self, cur, batch: list[Pending]) -> dict[int, Outcome]:
        unknown = {p.draft.from_user: p.draft.username for p in batch if p.draft.from_user not in self.known_users}
        for user_id, username in unknown.items():
            store.ensure_user(cur, store.Identity(user_id, username))
        keyed = [p for p in batch if p.draft.client_id is not None]
        earlier = store.find_by_client_ids(cur, [(p.draft.from_user, p.draft.client_id) for p in keyed])
        outcomes: dict[int, Outcome] = {}
        to_insert: list[Pending] = []
        first_by_key: dict[tuple, Pending] = {}
        for pending in batch:
            draft = pending.draft
            key = (draft.from_user, draft.client_id)
            if draft.client_id is not None and key in earlier:
                outcomes[id(pending)] = Outcome(earlier[key], duplicate=True)
            elif draft.client_id is not None and key in first_by_key:
                continue  # the same resend twice in one batch: answered below
            else:
                if draft.client_id is not None:
                    first_by_key[key] = pending
                to_insert.append(pending)
        if to_insert:
            drafts = [p.draft for p in to_insert]
            store.allocate_seqs(cur, drafts)
            stored = store.insert_messages(cur, drafts, self.notify_channel, self.origin)
            lost_race = []
            for pending in to_insert:
                message = stored.get((pending.draft.channel, pending.draft.seq))
                if message is None:
                    lost_race.append(pending)  # another process stored this clientId first
                else:
                    message.origin_connection = pending.origin
                    outcomes[id(pending)] = Outcome(message, duplicate=False)
            if lost_race:
                found = store.find_by_client_ids(cur, [(p.draft.from_user, p.draft.client_id) for p in lost_race])
                for pending in lost_race:
                    outcomes[id(pending)] = Outcome(found[(pending.draft.from_user, pending.draft.client_id)], True)
        for pending in batch:
            if id(pending) not in outcomes:
                first = first_by_key[(pending.draft.from_user, pending.draft.client_id)]
                outcomes[id(pending)] = Outcome(outcomes[id(first)].message, duplicate=True)
        return outcomes
