"""Full-text search of messages (PROTOCOL.md §11), newest first.

Messages carry a generated `search` tsvector (schema.sql, the 'simple' configuration: words
as written, lower-cased, any language) with a GIN index. A query is read as a web search
engine reads one (websearch_to_tsquery: words ANDed, "quoted phrases", `or`, `-word`).
A user finds what they may read: the rooms they are a member of and their own DMs, or the
one room (a public one, or theirs) or conversation asked for. A deleted message has empty
content, so its vector is empty and nothing finds it.
"""

from __future__ import annotations

from .messages import StoredMessage
from .store import DM_PAIR, SELECT_MESSAGES, row_to_message

QUERY = "websearch_to_tsquery('simple'::regconfig, %(query)s)"
# Where a search with no `room` or `with` looks: the rooms the user is a member of (private
# ones too), and the conversations they are a party to (sent by them, or to them).
_MINE = """(m.room IN (SELECT c.room FROM chat_members c WHERE c.user_id = %(me)s)
            OR (m.to_user = %(me)s) OR (m.to_user IS NOT NULL AND m.from_user = %(me)s))"""


def search(
    cur, me: int, query: str, room: str | None, other: int | None, before: int | None, limit: int
) -> list[StoredMessage]:
    """The newest `limit` messages matching `query` (below id `before`), in the one room or
    conversation given, else in everything the user may read."""
    params: dict = {"me": me, "query": query, "limit": limit, "before": before}
    if room is not None:
        scope = "m.room = %(room)s"
        params["room"] = room
    elif other is not None:
        scope = DM_PAIR.format(low="%(low)s", high="%(high)s")
        params.update(low=min(me, other), high=max(me, other))
    else:
        scope = _MINE
    below = " AND m.id < %(before)s" if before is not None else ""
    cur.execute(
        f"{SELECT_MESSAGES} WHERE m.search @@ {QUERY} AND {scope}{below} ORDER BY m.id DESC LIMIT %(limit)s",
        params,
    )
    return [row_to_message(row) for row in cur]
