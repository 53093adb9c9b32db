"""The reads of resuming joins (app/resume_reads.py), on a real database.

Each test answers batches directly, as a crowd resuming at once would be answered. What a
resume sends over a connection (no gap, no repeat, events in order) is covered end to end
by the tests of membership, events and the cluster.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app import db, runtime
from app.resume_reads import RecentPages, ResumeReads
from tests.support.databases import seed_room, sql
from tests.support.identities import unique

PAGE_SIZE = 500


@pytest.fixture
def pool(database_url: str) -> Iterator[db.Pool]:
    pool = db.Pool(database_url, size=2, setup=runtime.prepare_pool_statements)
    yield pool
    pool.close()


def room_with_messages(url: str, count: int) -> tuple[str, list[int]]:
    room = unique("resume")
    seed_room(url, room, count)
    ids = [row[0] for row in sql(url, "SELECT id FROM messages WHERE room = %s ORDER BY id", (room,))]
    return room, ids


def contents(page) -> list[str]:
    return [item.data["content"] for item in page]


def test_members_resuming_a_room_from_one_place_share_one_read_and_its_frames(database_url, pool):
    room, ids = room_with_messages(database_url, 4)
    key = (room, ids[1], ids[3])
    reads = ResumeReads(pool, PAGE_SIZE)

    [first] = reads.answer_batch([key])
    [second, third] = reads.answer_batch([key, key])

    assert contents(first.page) == ["old 3", "old 4"]
    assert [m.id for m in second.page] == [m.id for m in third.page] == ids[2:]
    # one page, never changed, shared: each frame is encoded once for every member
    assert first.page is second.page is third.page
    assert isinstance(first.page, tuple)


def test_a_kept_page_is_the_room_up_to_its_floor_and_a_later_floor_is_read_afresh(database_url, pool):
    room, ids = room_with_messages(database_url, 3)
    reads = ResumeReads(pool, PAGE_SIZE)
    [before] = reads.answer_batch([(room, ids[0], ids[2])])
    # A change after the floor comes to each connection with that floor live, as an event
    # above it: the page read before it stands for the room up to the floor.
    sql(database_url, "UPDATE messages SET content = 'changed' WHERE id = %s", (ids[2],))

    [kept] = reads.answer_batch([(room, ids[0], ids[2])])
    [later] = reads.answer_batch([(room, ids[0], ids[2] + 1)])

    assert contents(before.page) == contents(kept.page) == ["old 2", "old 3"]
    assert contents(later.page) == ["old 2", "changed"]


def test_a_page_tells_the_rooms_last_event_when_read_and_one_kept_from_before_an_event_is_read_again(
    database_url, pool
):
    """What Memberships._rejoin compares with the room's last event at the join's turn."""
    room, ids = room_with_messages(database_url, 2)
    last_event = {room: 4}
    reads = ResumeReads(pool, PAGE_SIZE, lambda name: last_event[name])
    key = (room, ids[0], ids[1])
    [first] = reads.answer_batch([key])
    [kept] = reads.answer_batch([key])
    last_event[room] = 5  # an edit released after the read

    [after] = reads.answer_batch([key])
    [kept_after] = reads.answer_batch([key])

    assert first.read_after_event == kept.read_after_event == 4
    assert kept.page is first.page
    assert after.read_after_event == kept_after.read_after_event == 5
    assert after.page is not first.page and kept_after.page is after.page


def test_a_batch_of_kept_new_and_empty_reads_answers_each_in_its_order(database_url, pool):
    room, ids = room_with_messages(database_url, 3)
    other, other_ids = room_with_messages(database_url, 2)
    sql(database_url, "INSERT INTO chat_members (room, user_id) VALUES (%s, 1), (%s, 2)", (room, room))
    reads = ResumeReads(pool, PAGE_SIZE)
    reads.answer_batch([(room, ids[0], ids[2])])

    answers = reads.answer_batch(
        [(other, other_ids[0], other_ids[1]), (room, ids[2], ids[2]), (room, ids[0], ids[2]), (room, ids[1], ids[2])]
    )

    assert [contents(a.page) for a in answers] == [["old 2"], [], ["old 2", "old 3"], ["old 3"]]
    assert [a.members for a in answers] == [0, 2, 2, 2]


@pytest.mark.parametrize("page_size", [1, 2])
def test_a_page_ends_at_the_page_size_kept_or_not(database_url, pool, page_size):
    room, ids = room_with_messages(database_url, 3)
    reads = ResumeReads(pool, page_size)

    fresh, kept = (reads.answer_batch([(room, 0, ids[2])])[0] for _ in range(2))

    assert [m.id for m in fresh.page] == [m.id for m in kept.page] == ids[:page_size]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_recent_pages_forget_the_oldest_past_their_item_bound():
    recent = RecentPages(items_max=3, seconds=60)
    recent.keep(("a", 0, 1), ("a1", "a2"), 0)
    recent.keep(("b", 0, 1), ("b1",), 0)
    recent.keep(("c", 0, 1), ("c1",), 0)

    assert recent.get(("a", 0, 1)) is None
    assert recent.get(("b", 0, 1)) == (("b1",), 0)
    assert recent.get(("c", 0, 1)) == (("c1",), 0)


def test_recent_pages_keep_nothing_larger_than_their_bound():
    recent = RecentPages(items_max=1, seconds=60)
    recent.keep(("a", 0, 1), ("a1",), 0)
    recent.keep(("b", 0, 2), ("b1", "b2"), 0)

    assert recent.get(("a", 0, 1)) == (("a1",), 0)
    assert recent.get(("b", 0, 2)) is None


def test_recent_pages_hand_out_a_page_for_a_bounded_time():
    clock = FakeClock()
    recent = RecentPages(items_max=10, seconds=30, clock=clock)
    recent.keep(("a", 0, 1), ("a1",), 7)

    clock.now += 30
    assert recent.get(("a", 0, 1)) == (("a1",), 7)
    clock.now += 1
    assert recent.get(("a", 0, 1)) is None
    recent.keep(("a", 0, 1), ("a1 again",), 8)
    assert recent.get(("a", 0, 1)) == (("a1 again",), 8)
