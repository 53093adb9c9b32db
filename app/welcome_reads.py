"""The reads of many connecting users at once: their names, rooms, conversations and counts.

A `welcome` needs four reads: the user's stored name (the row added if missing) and
conversations' positions, the rooms they are a member of, their latest conversations, and
the read state of both. Here a round trip costs more CPU than any of these statements (a
trivial query: about 90 us in the worker and as much in PostgreSQL, measured on the
benchmark's machine), and a crowd reconnecting after a restart would pay four each.
Queued here (app/batched.py), the users connecting while a batch runs are read by the
next one: four round trips for all of them, and the pool stays free for the rest.
"""

from __future__ import annotations

from typing import NamedTuple

from .batched import Batched
from .db import BigintArray, Pool, TextArray
from .membership import WELCOME_LIST_MAX, latest_rooms
from .prepared import PreparedStatements
from .protocol import ROOM_MENTION
from .read_state import DM_UNREAD, ROOM_UNREAD, ReadState, mention_names
from .store import CONVERSATIONS_OF, MEMBER_ROOM_COLUMNS, MemberRoom, Session, create_user
from .tokens import Identity

# Users read by one set of statements at most, and greenlets reading at once.
BATCH_MAX = 100
READERS_MAX = 2

# Each user's stored name, the row added first if there is none (unless the name is taken:
# then None), and each of their conversations with its last seq. Rows are added in id
# order, so that two batches adding the same users cannot wait for each other in a cycle.
_OPEN_SESSIONS = """
WITH me AS (
    SELECT * FROM unnest(%(user_ids)s, %(usernames)s) AS me(id, username)
), stored AS (
    SELECT u.id, u.username FROM users u WHERE u.id = ANY(%(user_ids)s)
), created AS (
    INSERT INTO users (id, username)
    SELECT me.id, me.username FROM me WHERE NOT EXISTS (SELECT 1 FROM stored s WHERE s.id = me.id)
    ORDER BY me.id
    ON CONFLICT DO NOTHING RETURNING id, username
)
SELECT me.id, COALESCE(s.username, c.username), t.user_low, t.user_high, t.last_seq
FROM me
LEFT JOIN stored s ON s.id = me.id
LEFT JOIN created c ON c.id = me.id
LEFT JOIN LATERAL (
    SELECT user_low, user_high, last_seq FROM dm_threads WHERE user_low = me.id
    UNION ALL
    SELECT user_low, user_high, last_seq FROM dm_threads WHERE user_high = me.id AND user_low <> me.id
) t ON true"""
_MEMBER_ROOMS = f"""
SELECT m.user_id, {MEMBER_ROOM_COLUMNS}
FROM chat_members m JOIN rooms r ON r.name = m.room
WHERE m.user_id = ANY(%(user_ids)s)"""
_CONVERSATIONS = f"""
SELECT me.id, c.* FROM unnest(%(user_ids)s) AS me(id)
CROSS JOIN LATERAL ({CONVERSATIONS_OF.format(me="me.id")}) AS c"""
# The words mentioning user w.me: their lower-cased name w.name, and the room-wide one.
_NAMES = "ARRAY[w.name, %(room_mention)s]"
_ROOM_COUNTS = f"""
SELECT w.n, {ROOM_UNREAD.format(me="w.me", names=_NAMES)}
FROM unnest(%(users)s, %(names)s, %(rooms)s, %(reads)s) WITH ORDINALITY AS w(me, name, room, read, n)"""
_DM_COUNTS = f"""
SELECT w.n, {
    DM_UNREAD.format(
        rows="unnest(%(users)s, %(names)s, %(others)s) WITH ORDINALITY AS w(me, name, other, n)",
        me="w.me",
        names=_NAMES,
    )
}"""

# Prepared on every connection of the pool (runtime.prepare_pool_statements): at a
# batch of one user, the connect of a quiet server, planning them would cost more than
# running them. Generic plans: index probes per user, per room and per conversation,
# whatever the arrays' lengths.
STATEMENTS = PreparedStatements(
    {
        "chat_open_sessions": _OPEN_SESSIONS,
        "chat_member_rooms": _MEMBER_ROOMS,
        "chat_conversations": _CONVERSATIONS,
        "chat_room_counts": _ROOM_COUNTS,
        "chat_dm_counts": _DM_COUNTS,
    },
    types={
        "user_ids": "bigint[]",
        "usernames": "text[]",
        "limit": "integer",
        "offset": "integer",
        "end": "integer",
        "users": "bigint[]",
        "names": "text[]",
        "rooms": "text[]",
        "reads": "bigint[]",
        "others": "bigint[]",
        "room_mention": "text",
    },
)
_EXECUTE = STATEMENTS.execute


class Welcome(NamedTuple):
    """What a connecting user's `welcome` is made of."""

    session: Session
    partners: list[dict]  # the latest conversations, as store.conversations_of gives them
    room_states: dict[str, ReadState]  # of the latest rooms
    dm_states: dict[int, ReadState]  # of `partners`


class WelcomeReads(Batched[Identity, Welcome]):
    """Queue of connecting users, read many a round trip."""

    def __init__(self, pool: Pool) -> None:
        super().__init__(BATCH_MAX, READERS_MAX)
        self.pool = pool

    def read(self, identity: Identity) -> Welcome:
        """What the user's `welcome` needs, the user's row added if missing.

        Raises what the read raised (ChatError when the database is away).
        """
        return self.ask(identity)

    def answer_batch(self, batch: list[Identity]) -> list[Welcome]:
        """Each identity's welcome; a user connecting again with a name of its own waits its turn.

        A user's identities in one batch that give another name than its first (a rename
        on its way, two devices with tokens of either side of it) are answered by a batch
        after this one, as if they had connected after it: each connection's mentions are
        counted by the name its own token gives (the batch counts one name per user).
        """
        first_names: dict[int, str | None] = {}
        now, later = [], []
        for n, identity in enumerate(batch):
            same = first_names.setdefault(identity.user_id, identity.username) == identity.username
            (now if same else later).append(n)
        if not later:
            return self._answer(batch)
        answers: dict[int, Welcome] = {}
        answers.update(zip(now, self._answer([batch[n] for n in now]), strict=True))
        answers.update(zip(later, self.answer_batch([batch[n] for n in later]), strict=True))
        return [answers[n] for n in range(len(batch))]

    def _answer(self, batch: list[Identity]) -> list[Welcome]:
        # One row to add per user (a user connecting twice at once is read once).
        wanted = {identity.user_id: identity for identity in reversed(batch)}
        user_ids = BigintArray(sorted(wanted))
        ids = {"user_ids": user_ids}
        names: dict[int, str | None] = {}
        threads: dict[int, list] = {user_id: [] for user_id in user_ids}
        rooms: dict[int, list[MemberRoom]] = {user_id: [] for user_id in user_ids}
        partners: dict[int, list[dict]] = {user_id: [] for user_id in user_ids}
        with self.pool.autocommit() as cur:
            cur.execute(
                _EXECUTE["chat_open_sessions"],
                {**ids, "usernames": TextArray(wanted[u].username or f"user{u}" for u in user_ids)},
            )
            for user_id, name, low, high, last_seq in cur.fetchall():
                names[user_id] = name
                if low is not None:
                    threads[user_id].append((("d", low, high), last_seq))
            for user_id, name in names.items():
                if name is None:  # the name is someone else's: added under another
                    names[user_id] = create_user(cur, wanted[user_id])
            cur.execute(_EXECUTE["chat_member_rooms"], ids)
            for user_id, *row in cur:
                rooms[user_id].append(MemberRoom(*row))
            cur.execute(
                _EXECUTE["chat_conversations"], {**ids, "limit": WELCOME_LIST_MAX, "offset": 0, "end": WELCOME_LIST_MAX}
            )
            for user_id, other, name, last_id in cur:
                partners[user_id].append({"userId": other, "username": name, "lastId": last_id})
            # mentioned by the name the token gives, or else the stored one (as for its session)
            mentioned_as = {u: mention_names(wanted[u].username or name)[0] for u, name in names.items()}
            room_states, dm_states = self._counts(cur, mentioned_as, rooms, partners)
        answers = []
        for identity in batch:
            user_id = identity.user_id
            username = identity.username or names[user_id]
            answers.append(
                Welcome(
                    Session(username, threads[user_id], rooms[user_id]),
                    partners[user_id],
                    room_states[user_id],
                    dm_states[user_id],
                )
            )
        return answers

    @staticmethod
    def _counts(cur, lowered: dict, rooms: dict, partners: dict) -> tuple[dict, dict]:
        """The read state of each user's latest rooms and conversations, by user (`lowered`:
        the name mentioning each, lower-cased)."""
        room_rows = [(u, member) for u in rooms for member in latest_rooms(rooms[u])]
        dm_rows = [(u, partner["userId"]) for u in partners for partner in partners[u]]
        room_states: dict[int, dict[str, ReadState]] = {u: {} for u in rooms}
        dm_states: dict[int, dict[int, ReadState]] = {u: {} for u in rooms}
        if room_rows:
            cur.execute(
                _EXECUTE["chat_room_counts"],
                {
                    "users": BigintArray(u for u, _ in room_rows),
                    "names": TextArray(lowered[u] for u, _ in room_rows),
                    "rooms": TextArray(member.room for _, member in room_rows),
                    "reads": BigintArray(member.last_read_id for _, member in room_rows),
                    "room_mention": ROOM_MENTION,
                },
            )
            for n, unread, mentions in cur:
                user_id, member = room_rows[n - 1]
                room_states[user_id][member.room] = ReadState(member.last_read_id, unread, mentions)
        if dm_rows:
            cur.execute(
                _EXECUTE["chat_dm_counts"],
                {
                    "users": BigintArray(u for u, _ in dm_rows),
                    "names": TextArray(lowered[u] for u, _ in dm_rows),
                    "others": BigintArray(other for _, other in dm_rows),
                    "room_mention": ROOM_MENTION,
                },
            )
            for n, *state in cur:
                user_id, other = dm_rows[n - 1]
                dm_states[user_id][other] = ReadState(*state)
        return room_states, dm_states
