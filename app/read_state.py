"""Read state (PROTOCOL.md §9): the stored read markers, and unread and mention counts.

A room's marker is chat_members.last_read_id, a conversation's a row of dm_reads. Counts
are read from the database when asked (welcome, my_rooms, conversations, read), never
kept per member: a message to a room of 5,000 members would otherwise update 5,000 rows
on the hot path. Each count reads index entries only (schema.sql: messages_room_id_sender,
messages_room_mentions, messages_dm_inbox), as many as there are unread messages.
Every function takes a cursor; all SQL is parameterised. A `read` frame's move and counts
are app/read_marks.py's, many reads at once, counted as ROOM_COUNTS and DM_COUNTS count.
"""

from __future__ import annotations

from dataclasses import dataclass

from .protocol import ROOM_MENTION

# A marker's commit does not wait for its WAL to reach the disk: readers send one every few
# messages, a batch of them a commit (app/read_marks.py), and a flush each would make the
# markers cost more than the messages they mark, which share a flush per batch. What a
# crash of PostgreSQL (not a clean restart, which flushes) can undo is the last fraction of
# a second of markers, never a message: the counts then show those messages unread again.
NO_FLUSH_WAIT = "SET LOCAL synchronous_commit = off;"

# Unread and mentions of rooms, each given with the marker it counts from. Two index-only
# range scans per room: the unread ones in messages_room_id_sender, those of them that
# mention anybody in the (small) messages_room_mentions.
# (ROOM_UNREAD: the two counts of room w.room from marker w.read for user {me}, mentioned by
# the words {names}; a batch of users gives each row its own.)
ROOM_UNREAD = """(SELECT count(*) FROM messages x
        WHERE x.room = w.room AND x.id > w.read AND x.from_user <> {me} AND NOT x.deleted),
       (SELECT count(*) FROM messages x
        WHERE x.room = w.room AND x.id > w.read AND x.from_user <> {me}
          AND x.mentions IS NOT NULL AND x.mentions && {names})"""
ROOM_COUNTS = f"""
SELECT w.room, {ROOM_UNREAD.format(me="%(me)s", names="%(names)s")}
FROM unnest(%(rooms)s::text[], %(reads)s::bigint[]) AS w(room, read)"""

# The marker, unread and mentions of conversations, by partner: one index-only range scan
# of messages_dm_inbox each (what the partner sent the user after the marker). A
# conversation with oneself has nothing unread: every message in it is one's own.
# (DM_UNREAD: the marker and counts of user {me}'s conversation with w.other, as ROOM_UNREAD.)
DM_UNREAD = """COALESCE(r.last_read_id, 0), c.unread, c.mentions
FROM {rows}
LEFT JOIN dm_reads r ON r.user_id = {me} AND r.other_id = w.other
CROSS JOIN LATERAL (
    SELECT count(*) AS unread, count(*) FILTER (WHERE x.mentions && {names}) AS mentions
    FROM messages x
    WHERE x.to_user = {me} AND x.from_user = w.other AND w.other <> {me}
      AND x.id > COALESCE(r.last_read_id, 0) AND NOT x.deleted
) c"""
DM_COUNTS = f"""
SELECT w.other, {DM_UNREAD.format(rows="unnest(%(others)s::bigint[]) AS w(other)", me="%(me)s", names="%(names)s")}"""


@dataclass(frozen=True)
class ReadState:
    """Where a user's reading of one room or conversation stands."""

    last_read_id: int
    unread: int
    mentions: int
    # The newest message the counts took in (in the statement's snapshot), told by `read`
    # only (app/read_marks.py): a client counts only those after it as they arrive. The room's
    # newest; a conversation's newest from the partner, the only ones the counts look at.
    # (Not read for welcome and the lists, whose items carry a lastId of their own: it cost
    # welcome an index probe per room and conversation.)
    counted_up_to: int | None = None

    def wire(self) -> dict[str, int]:
        return {"lastReadId": self.last_read_id, "unread": self.unread, "mentions": self.mentions}


def mention_names(username: str) -> list[str]:
    """The words that mention this user: their name (lower-cased, as stored by
    protocol.mentions_in) and the room-wide one."""
    return [username.lower(), ROOM_MENTION]


def room_counts(cur, me: int, username: str, reads: dict[str, int]) -> dict[str, ReadState]:
    """The read state of rooms, given each room's marker (room -> last_read_id)."""
    if not reads:
        return {}
    rooms = list(reads)
    params = {
        "me": me,
        "names": mention_names(username),
        "rooms": rooms,
        "reads": [reads[r] for r in rooms],
    }
    cur.execute(ROOM_COUNTS, params)
    return {room: ReadState(reads[room], unread, mentions) for room, unread, mentions in cur}


def dm_counts(cur, me: int, username: str, others: list[int]) -> dict[int, ReadState]:
    """The read state of the user's conversations with `others`."""
    if not others:
        return {}
    cur.execute(DM_COUNTS, {"me": me, "names": mention_names(username), "others": others})
    return {other: ReadState(*state) for other, *state in cur}


def add_counts(items: list[dict], states: dict, key: str) -> list[dict]:
    """Set the read state of `welcome`/`my_rooms`/`conversations` items (found by their
    `key` field) to the counted one; an item not counted keeps what it has."""
    for item in items:
        state = states.get(item[key])
        if state is not None:
            item.update(state.wire())
    return items
