"""Batched: requests of many greenlets answered many a round trip (app/batched.py)."""

from __future__ import annotations

import gevent
import pytest

from app.batched import Batched


class Doubling(Batched[int, int]):
    """Answers each number with its double, a batch a (slow) round trip; a negative number
    fails its whole batch."""

    def __init__(self, batch_max: int = 3, runners_max: int = 2) -> None:
        super().__init__(batch_max, runners_max)
        self.batches: list[list[int]] = []
        self.running = self.most_running = 0

    def answer_batch(self, batch: list[int]) -> list[int]:
        self.batches.append(batch)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        gevent.sleep(0.01)  # the round trip: others queue meanwhile
        self.running -= 1
        if any(n < 0 for n in batch):
            raise ValueError("negative")
        return [2 * n for n in batch]


def ask_at_once(batched: Batched, requests: list[int]) -> list:
    """Each request's answer (or what it raised), all asked before any is answered."""
    greenlets = [gevent.spawn(batched.ask, request) for request in requests]
    gevent.joinall(greenlets)
    return [g.value if g.successful() else g.exception for g in greenlets]


def test_requests_asked_at_once_share_batches_of_at_most_the_maximum_each_answered_its_own():
    doubling = Doubling(batch_max=3, runners_max=2)
    assert ask_at_once(doubling, list(range(10))) == [2 * n for n in range(10)]
    assert sorted(n for batch in doubling.batches for n in batch) == list(range(10))
    assert max(len(batch) for batch in doubling.batches) == 3
    assert len(doubling.batches) < 10  # shared: not a round trip each


def test_no_more_batches_run_at_once_than_the_runners_allowed():
    doubling = Doubling(batch_max=1, runners_max=2)
    ask_at_once(doubling, list(range(6)))
    assert doubling.most_running == 2


def test_a_failed_batch_fails_its_own_requests_only_and_the_next_batch_is_answered():
    doubling = Doubling(batch_max=2, runners_max=1)
    answers = ask_at_once(doubling, [1, -1, 2, 3])
    assert [type(a) for a in answers[:2]] == [ValueError, ValueError]  # the first batch: [1, -1]
    assert answers[2:] == [4, 6]
    assert doubling.ask(5) == 10  # the queue goes on


def test_an_answer_that_is_an_exception_is_raised_to_its_asker_alone():
    class Halving(Batched[int, int]):
        def answer_batch(self, batch: list[int]) -> list[int | Exception]:
            return [n // 2 if n % 2 == 0 else ValueError(f"{n} is odd") for n in batch]

    halving = Halving(batch_max=4, runners_max=1)
    askers = [gevent.spawn(halving.ask, n) for n in (2, 3, 4, 5)]
    gevent.joinall(askers)
    assert [asker.successful() for asker in askers] == [True, False, True, False]
    assert [askers[0].value, askers[2].value] == [1, 2]
    assert isinstance(askers[1].exception, ValueError) and str(askers[3].exception) == "5 is odd"


def test_a_request_asked_alone_is_answered_at_once():
    doubling = Doubling()
    assert doubling.ask(21) == 42
    assert doubling.batches == [[21]]


@pytest.mark.parametrize("runners_max", [1, 3])
def test_every_request_is_answered_whatever_the_number_of_runners(runners_max):
    doubling = Doubling(batch_max=4, runners_max=runners_max)
    assert ask_at_once(doubling, list(range(25))) == [2 * n for n in range(25)]


def test_requests_asked_for_later_are_answered_with_those_queued_meanwhile_nobody_waiting():
    doubling = Doubling(batch_max=10, runners_max=1)
    doubling.ask_later([1, 2])
    doubling.ask_later([3])
    assert doubling.batches == []  # nothing waits: the runner has not run yet
    assert doubling.ask(4) == 8
    assert sorted(n for batch in doubling.batches for n in batch) == [1, 2, 3, 4]
    assert len(doubling.batches) == 1


class WaitingFirst(Doubling):
    """Doubling whose runners wait a turn of the event loop before taking each batch."""

    def before_batch(self) -> None:
        gevent.sleep(0)


def test_what_queues_while_a_runner_waits_before_its_batch_joins_that_batch():
    waiting = WaitingFirst(batch_max=10, runners_max=2)
    first = gevent.spawn(waiting.ask, 1)
    gevent.sleep(0)  # its runner is started, then waits: the others queue meanwhile
    assert ask_at_once(waiting, [2, 3, 4]) == [4, 6, 8]
    assert first.get() == 2
    assert waiting.batches == [[1, 2, 3, 4]]


def test_a_runner_that_finds_the_queue_emptied_while_it_waited_answers_no_empty_batch():
    waiting = WaitingFirst(batch_max=10, runners_max=2)
    assert ask_at_once(waiting, list(range(6))) == [2 * n for n in range(6)]
    assert [] not in waiting.batches


def test_busy_while_requests_are_queued_or_answered_and_not_after():
    doubling = Doubling(batch_max=10, runners_max=1)
    assert not doubling.busy()
    asker = gevent.spawn(doubling.ask, 1)
    gevent.sleep(0.001)  # its batch is being answered (the round trip takes 0.01 s)
    assert doubling.busy()
    assert asker.get() == 2
    gevent.sleep(0)  # the runner ends
    assert not doubling.busy()
