"""The `read` frames of many users at once: markers moved and counts read, a round trip for all.

A reader sends `read` every few messages (PROTOCOL.md §9): a move and its counts each, a
round trip and a statement to plan apiece, would cost more than the messages read. Queued
here (app/batched.py), the reads of many users are answered by one prepared statement: it
moves every marker forward and counts from where each stands after, as read_state's
ROOM_COUNTS and DM_COUNTS count.
"""

from __future__ import annotations

from typing import NamedTuple

import orjson

from .batched import Batched
from .db import Pool
from .prepared import PreparedStatements
from .protocol import ROOM_MENTION
from .read_state import NO_FLUSH_WAIT, ReadState, mention_names
from .store import DM_PAIR

# Reads answered by one statement at most, and greenlets sending one at once: a second
# batch forms while the first is on its way (app/batched.py).
BATCH_MAX = 500
READERS_MAX = 2

# The reads of a JSON array of records (me, the room or other, id, name), numbered from 1
# (n) in their order: one parameter, since psycopg2 adapts each parameter through Python,
# and for the one or two reads of a usual batch eight arrays' adaptations cost the worker
# more than the round trip (bench/README.md, the twentieth stop). Unnested from an array,
# not read with json_to_recordset: PostgreSQL guesses a hundred rows for that, and a
# generic plan made while chat_members is small would then hash the whole table at every
# batch (tests/test_db.py); for an array it guesses ten, and looks each read up.
_READS = """unnest(ARRAY(SELECT json_array_elements({reads}))) WITH ORDINALITY AS j(read, n)
         CROSS JOIN LATERAL json_to_record(j.read) AS r(me bigint, {where}, id bigint, name text)"""

# The room reads: each with its room's newest id (a marker never goes past it, or the
# next messages would count as read before anyone saw them; also the counts'
# `countedUpTo`, read in the same snapshot); the markers moved forward only
# (`last_read_id < target`, checked again on a row a concurrent read updated first); and
# the counts from each marker as it stands after, as ROOM_COUNTS's. The rest of
# the statement sees the rows as they were before the UPDATE: the marker after is the
# greater of that one and the target, NULL for a user who is not a member. (Not joined
# with the UPDATE's RETURNING: planned for a few rows, that join would compare every read
# with every other.) Each newest is read once: room_asked, used twice, is computed once.
_ROOMS = f"""
room_asked AS (
    SELECT j.n, r.*,
           COALESCE((SELECT x.id FROM messages x WHERE x.room = r.room ORDER BY x.id DESC LIMIT 1), 0) AS newest
    FROM {_READS.format(reads="%(rooms)s", where="room text")}
), room_moved AS (
    UPDATE chat_members c SET last_read_id = LEAST(r.id, r.newest) FROM room_asked r
    WHERE c.room = r.room AND c.user_id = r.me AND c.last_read_id < LEAST(r.id, r.newest)
), room_after AS (
    SELECT r.*, CASE WHEN c.user_id IS NOT NULL THEN GREATEST(c.last_read_id, LEAST(r.id, r.newest)) END AS read
    FROM room_asked r LEFT JOIN chat_members c ON c.room = r.room AND c.user_id = r.me
)"""
_ROOM_STATES = """
SELECT false, s.n, s.read,
       (SELECT count(*) FROM messages x
        WHERE x.room = s.room AND x.id > s.read AND x.from_user <> s.me AND NOT x.deleted),
       (SELECT count(*) FROM messages x
        WHERE x.room = s.room AND x.id > s.read AND x.from_user <> s.me
          AND x.mentions IS NOT NULL AND x.mentions && ARRAY[s.name, %(everyone)s]),
       s.newest
FROM room_after s"""

# The conversation reads, counted as DM_COUNTS counts: the marker clamped to the
# conversation's newest message, and after the move the greater of the stored one (none
# is 0) and the target; `countedUpTo` the partner's newest (the only messages the counts
# look at).
_DMS = f"""
dm_asked AS (
    SELECT j.n, r.*,
           COALESCE((SELECT m.id FROM messages m
                     WHERE {DM_PAIR.format(low="LEAST(r.me, r.other)", high="GREATEST(r.me, r.other)")}
                     ORDER BY m.id DESC LIMIT 1), 0) AS newest,
           COALESCE((SELECT x.id FROM messages x
                     WHERE x.to_user = r.me AND x.from_user = r.other AND r.other <> r.me
                     ORDER BY x.id DESC LIMIT 1), 0) AS counted_up_to
    FROM {_READS.format(reads="%(dms)s", where="other bigint")}
), dm_moved AS (
    INSERT INTO dm_reads AS d (user_id, other_id, last_read_id) SELECT me, other, LEAST(id, newest) FROM dm_asked
    ON CONFLICT (user_id, other_id) DO UPDATE SET last_read_id = EXCLUDED.last_read_id
        WHERE d.last_read_id < EXCLUDED.last_read_id
), dm_after AS (
    SELECT r.*, GREATEST(COALESCE(d.last_read_id, 0), LEAST(r.id, r.newest)) AS read
    FROM dm_asked r LEFT JOIN dm_reads d ON d.user_id = r.me AND d.other_id = r.other
)"""
_DM_STATES = """
SELECT true, s.n, s.read, c.unread, c.mentions, s.counted_up_to
FROM dm_after s CROSS JOIN LATERAL (
    SELECT count(*) AS unread, count(*) FILTER (WHERE x.mentions && ARRAY[s.name, %(everyone)s]) AS mentions
    FROM messages x
    WHERE x.to_user = s.me AND x.from_user = s.other AND s.other <> s.me AND x.id > s.read AND NOT x.deleted
) c"""

# Prepared on every connection of the pool (runtime.prepare_pool_statements): a batch is
# often a read or two (a round trip gathers what arrived meanwhile), and planning the
# statement would then cost more than running it. Planned generically (the pool's
# connections force it: prepared.PLANNER_SETTINGS): the batch's size changes nothing in
# the plan, an index probe per read. Rows: (is a DM, position in its array, marker,
# unread, mentions, counted up to); the marker NULL for a room the user is not a member of.
STATEMENTS = PreparedStatements(
    {"chat_read_marks": f"WITH {_ROOMS}, {_DMS}\n{_ROOM_STATES}\nUNION ALL{_DM_STATES}"},
    types={"rooms": "json", "dms": "json", "everyone": "text"},
)
# One query string, so one transaction in autocommit: its commit waits for no flush (see
# read_state.NO_FLUSH_WAIT for why a marker may).
_MARK = f"{NO_FLUSH_WAIT} {STATEMENTS.execute['chat_read_marks']}"


class ReadMark(NamedTuple):
    """A `read`: the user's marker in a room or (`other`) a conversation, to `message_id`."""

    me: int
    username: str  # whose mentions the counts look for
    room: str | None
    other: int | None
    message_id: int

    @property
    def marker(self) -> tuple[int, str | None, int | None]:
        """Which marker the read moves: the same for two reads of one user and room."""
        return self.me, self.room, self.other


class ReadMarks(Batched[ReadMark, ReadState | None]):
    """Queue of `read`s, each answered with the read state after it, many a round trip."""

    def __init__(self, pool: Pool) -> None:
        super().__init__(BATCH_MAX, READERS_MAX)
        self.pool = pool

    def mark(self, me: int, username: str, room: str | None, other: int | None, message_id: int) -> ReadState | None:
        """Move the user's marker in `room` or the conversation with `other` forward to
        `message_id` (at most the newest message); the read state after, with
        `counted_up_to`, or None when the user is not a member of the room.

        Raises what the statement raised (ChatError when the database is away).
        """
        return self.ask(ReadMark(me, username, room, other, message_id))

    def answer_batch(self, marks: list[ReadMark]) -> list[ReadState | None]:
        """The read state after each read of the batch, in its order."""
        rooms, dms = _merged(marks)
        with self.pool.autocommit() as cur:
            cur.execute(_MARK, _parameters(rooms, dms))
            rows = cur.fetchall()
        states: dict[tuple, ReadState | None] = {}
        for is_dm, n, read, unread, mentions, counted_up_to in rows:
            marker = (dms if is_dm else rooms)[n - 1].marker
            states[marker] = None if read is None else ReadState(read, unread, mentions, counted_up_to)
        return [states[mark.marker] for mark in marks]


def _merged(marks: list[ReadMark]) -> tuple[list[ReadMark], list[ReadMark]]:
    """The room reads and the conversation reads, one per marker: of two reads of one
    marker the greater id, since it wins anyway.

    Twice in one statement, a row would be updated once by an arbitrary one of them (and
    an INSERT ... ON CONFLICT would fail), and the two answers could tell different
    markers; merged, both are answered with the marker as it stands after. Sorted: the
    statement probes the markers in its arrays' order, so two batches moving the same
    markers lock them in one order (else each could wait for a row the other holds, until
    PostgreSQL failed one).
    """
    greatest: dict[tuple, ReadMark] = {}
    for mark in marks:
        held = greatest.get(mark.marker)
        if held is None or mark.message_id > held.message_id:
            greatest[mark.marker] = mark
    rooms = sorted((m for m in greatest.values() if m.room is not None), key=lambda m: (m.room, m.me))
    dms = sorted((m for m in greatest.values() if m.room is None), key=lambda m: (m.me, m.other))
    return rooms, dms


def _parameters(rooms: list[ReadMark], dms: list[ReadMark]) -> dict:
    """The statement's records (_READS) of the room reads and of the conversation reads;
    of a user's mention words only their own (the room-wide one is everyone's)."""
    return {
        "rooms": _records(rooms, "room"),
        "dms": _records(dms, "other"),
        "everyone": ROOM_MENTION,
    }


def _records(marks: list[ReadMark], where: str) -> str:
    """The JSON array of the reads' records, `where` naming the room's or conversation's field."""
    return orjson.dumps(
        [{"me": m.me, where: getattr(m, where), "id": m.message_id, "name": _own_mention(m.username)} for m in marks]
    ).decode()


def _own_mention(username: str) -> str:
    """The word that mentions this user alone (read_state.mention_names without @room;
    a user named "room" has none other)."""
    return next((name for name in mention_names(username) if name != ROOM_MENTION), ROOM_MENTION)
