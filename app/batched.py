"""Requests that many greenlets make at once, answered many a round trip.

What group commit does for messages (app/batcher.py), for everything else a crowd asks at
once: `welcome`'s reads (app/welcome_reads.py), the reads of resuming joins
(app/resume_reads.py), the `read` markers (app/read_marks.py), the rows of users connecting
(app/users_online.py), and in app/presence.py the online lists, the presence rows and the
first joins. A crowd reconnecting, or readers under load, would each pay a round trip, a
transaction and (for a write) a commit; queued here, one statement serves everyone who
asked while the previous one ran, and the pool stays free for the rest. A statement that
locks rows for many requests takes the locks in one order, so that two batches never wait
for each other in a circle.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from gevent.event import AsyncResult

from .runners import run_soon

Request = TypeVar("Request")
Answer = TypeVar("Answer")


class Batched(Generic[Request, Answer]):
    """A queue of requests and at most `runners_max` greenlets answering them, `batch_max`
    a batch. Subclasses answer a batch (`answer_batch`)."""

    def __init__(self, batch_max: int, runners_max: int) -> None:
        self.batch_max = batch_max
        self.runners_max = runners_max
        self._queue: list[tuple[Request, AsyncResult | None]] = []
        self._runners = 0

    def ask(self, request: Request) -> Answer:
        """The request's answer, once a batch holding it is answered.

        Raises what answering its batch raised (ChatError when the database is away).
        """
        return self.submit(request).get()

    def submit(self, request: Request) -> AsyncResult:
        """Queue the request; its answer (or what answering it raised) comes in the result."""
        result: AsyncResult = AsyncResult()
        self._queue.append((request, result))
        self._start_runner()
        return result

    def ask_later(self, requests: list[Request]) -> None:
        """Queue requests whose answers nobody waits for: what answering them raises is
        lost, so such a subclass's answer_batch handles its own failures."""
        self._queue.extend((request, None) for request in requests)  # no result to set
        self._start_runner()

    def busy(self) -> bool:
        """Whether requests are queued or being answered now."""
        return bool(self._queue) or self._runners > 0

    def _start_runner(self) -> None:
        if self._queue and self._runners < self.runners_max:
            self._runners += 1
            run_soon(self._answer_queued)

    def answer_batch(self, batch: list[Request]) -> list[Answer | Exception]:
        """The answer of each request of the batch, in its order.

        An answer that is an exception is raised to its asker alone (something wrong in
        that request); what answer_batch raises is raised to every asker of the batch.
        """
        raise NotImplementedError

    def before_batch(self) -> None:
        """Called by a runner before it takes each batch; nothing here (see Tends)."""

    def _answer_queued(self) -> None:
        try:
            while self._queue:
                self.before_batch()
                if not self._queue:
                    break  # another runner took what was queued meanwhile
                batch = self._queue[: self.batch_max]
                del self._queue[: self.batch_max]
                try:
                    answers = self.answer_batch([request for request, _ in batch])
                except BaseException as exc:
                    for _, result in batch:
                        if result is not None:
                            result.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    for (_, result), answer in zip(batch, answers, strict=True):
                        if result is None:
                            continue
                        if isinstance(answer, Exception):
                            result.set_exception(answer)
                        else:
                            result.set(answer)
        finally:
            self._runners -= 1
