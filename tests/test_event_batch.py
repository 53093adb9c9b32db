"""Which of a batch's event requests share a round (app/event_batch.py split_round): one
statement sees each message as it was before it, so requests that would need each
other's outcome go in later rounds, in the order they came."""

from __future__ import annotations

import pytest

from app.event_batch import EventRequest, split_round
from app.protocol import Command

THUMBS = "\N{THUMBS UP SIGN}"
APPLE = "\N{RED APPLE}"


def request(kind: str, message_id: int, user_id: int = 1, emoji: str | None = None) -> EventRequest:
    return EventRequest(user_id, f"u{user_id}", Command(kind, message_id=message_id, emoji=emoji))


@pytest.mark.parametrize(
    ("requests", "now", "later"),
    [
        pytest.param(
            [request("edit", 1), request("delete", 2), request("react", 3, 1, THUMBS)],
            [0, 1, 2],
            [],
            id="events about different messages share a round",
        ),
        pytest.param(
            [request("react", 1, 1, THUMBS), request("react", 1, 2, THUMBS), request("react", 1, 1, APPLE)],
            [0, 1, 2],
            [],
            id="reactions of other users or other emoji to one message share a round",
        ),
        pytest.param(
            [request("react", 1, 1, THUMBS), request("unreact", 1, 1, THUMBS), request("react", 1, 1, THUMBS)],
            [0],
            [1, 2],
            id="a react and its unreact wait for each other",
        ),
        pytest.param(
            [request("edit", 1), request("edit", 1), request("delete", 1)],
            [0],
            [1, 2],
            id="an edit goes alone of its message",
        ),
        pytest.param(
            [request("react", 1, 2, THUMBS), request("edit", 1), request("react", 1, 3, APPLE)],
            [0, 2],
            [1],
            id="an edit waits for the reactions before it, and the reactions after it do not wait for it",
        ),
        pytest.param(
            [request("delete", 1), request("react", 1, 2, THUMBS), request("react", 2, 2, THUMBS)],
            [0, 2],
            [1],
            id="a reaction waits for a delete of its message before it",
        ),
    ],
)
def test_a_round_holds_what_one_statement_can_decide_and_store(requests, now, later):
    assert split_round(requests, list(range(len(requests)))) == (now, later)


def test_a_later_round_takes_the_waiting_in_their_order():
    requests = [request("react", 1, 1, THUMBS), request("unreact", 1, 1, THUMBS), request("react", 1, 1, THUMBS)]
    assert split_round(requests, [1, 2]) == ([1], [2])
