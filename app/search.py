"""Full-text search of messages (PROTOCOL.md §11), newest first.

Messages carry a generated `search_words` tsvector (schema.sql, the 'simple' configuration:
words as written, lower-cased, any language; each kana and CJK ideograph a word of its
own). A query is read as a web search engine reads one (websearch_to_tsquery: words ANDed,
"quoted phrases", `or`, `-word`; a run of kana or ideographs a phrase of them:
search_query). A user finds what they may read: the rooms they are a member of and their
own DMs, or the one room (a public one, or theirs) or conversation asked for. A deleted
message has empty content, so its vector is empty and nothing finds it.

How it stays fast on a big table (the figures: bench/README.md). The GIN index
messages_search_scoped holds each message's words together with lexemes of where it was
written and of where its id lies (schema.sql, chat_search_scope). A search reads, newest
first, until it has `limit` messages:
  1. the newest WALK ids, walking the primary key and testing each message: this finds a
     common word soon, for which the index would hand over more matches than needed (a
     later page of a word the pages before found sparse skips it: WALK_AFTER_SPAN_MAX);
  2. windows of ids of growing size (WINDOWS), each from the index: the words AND the
     user's rooms and conversations AND the window. The index then hands over only matches
     the user may read, in that window; a word found in 1 message in 1,000 is 10,000
     messages at 10 M, each of which would otherwise be fetched to test its room;
  3. the rest, from the index.
All in one statement (after one that reads the lexemes), a UNION ALL whose branches after
the one that fills the page never run. The scope lexemes only narrow: the exact conditions
(membership, the conversation, the words on `search` itself) are tested on every row
found, so a hash collision, or a membership changed in between, finds nothing more than
the user may read.
"""

from __future__ import annotations

import re

from .messages import StoredMessage
from .store import DM_PAIR, SELECT_MESSAGES, row_to_message

QUERY = "websearch_to_tsquery('simple'::regconfig, %(query)s)"
# The indexed expression of messages_search_scoped (schema.sql), for the planner to match.
SCOPED = "(m.search_words || chat_search_scope(m.id, m.room, m.from_user, m.to_user))"
# Kana and CJK ideographs (halfwidth katakana and the ideographs past U+FFFF included), as
# escapes that Python's and PostgreSQL's regular expressions both read: schema.sql's
# chat_search_text sets each apart, as a word of its own, in what is indexed, and must use
# these very ranges (tests/test_search.py holds the two together).
IDEOGRAPHIC = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0002ebef"
_IDEOGRAPHIC_RUN = re.compile(f"[{IDEOGRAPHIC}]+")
# Where a search with no `room` or `with` looks: the rooms the user is a member of (private
# ones too), and the conversations they are a party to (sent by them, or to them).
_MINE = """(m.room IN (SELECT c.room FROM chat_members c WHERE c.user_id = %(me)s)
            OR (m.to_user = %(me)s) OR (m.to_user IS NOT NULL AND m.from_user = %(me)s))"""
# The same as lexemes of the index (tsquery text): any of the user's rooms, or a DM of theirs.
_MINE_LEXEMES = """concat_ws(' | ', (SELECT string_agg('R' || md5(c.room), ' | ') FROM chat_members c
                                     WHERE c.user_id = %(me)s), 'U' || %(me)s::text)"""
# The newest ids walked on the primary key first.
WALK = 1 << 14
# A later page (`before`) walks only when the pages before it, the ids from `before` up to
# the newest, span fewer ids than this: a word that sparse for the user has a handful of
# matches in a walk, which reads WALK rows where the windows read only the matches. A
# common word, whose pages stay near the newest, keeps its walk.
WALK_AFTER_SPAN_MAX = 4 * WALK
# Then windows of ids from the index, each of two aligned blocks of 2^bits ids (the index
# holds each message's block for these sizes: chat_search_scope), below the previous one.
WINDOWS = (16, 18, 20)


def search_query(query: str) -> str:
    """The query as websearch_to_tsquery should read it: each run of kana or CJK ideographs
    (a language written without spaces) a phrase of its characters, as they are indexed,
    so that `你好` finds `我说你好世界`. Within quotes the characters join that phrase."""
    if not _IDEOGRAPHIC_RUN.search(query):
        return query
    parts = query.split('"')
    for index, part in enumerate(parts):
        if index % 2:  # between a quote and the next (or the end): a phrase already
            parts[index] = _IDEOGRAPHIC_RUN.sub(lambda run: f" {' '.join(run.group())} ", part)
        else:
            parts[index] = _IDEOGRAPHIC_RUN.sub(lambda run: f' "{" ".join(run.group())}" ', part)
    return '"'.join(parts)


def search(
    cur, me: int, query: str, room: str | None, other: int | None, before: int | None, limit: int
) -> list[StoredMessage]:
    """The newest `limit` messages matching `query` (below id `before`), in the one room or
    conversation given, else in everything the user may read."""
    params: dict = {"me": me, "query": search_query(query), "limit": limit}
    if room is not None:
        scope, lexemes = "m.room = %(room)s", "'R' || md5(%(room)s)"
        params["room"] = room
    elif other is not None:
        scope = DM_PAIR.format(low="%(low)s", high="%(high)s")
        lexemes = "'U' || %(low)s::text || ' & U' || %(high)s::text"
        params.update(low=min(me, other), high=max(me, other))
    else:
        scope, lexemes = _MINE, _MINE_LEXEMES
    # The query's and the scope's lexemes, as text: given to each step as constants, so
    # that the planner estimates from the index's statistics what matches.
    cur.execute(f"SELECT {QUERY}::text, {lexemes}, (SELECT max(id) + 1 FROM messages)", params)
    words, within, newest = cur.fetchone()
    if not words or newest is None:
        return []  # no word to find (only punctuation, say), or no message at all
    high = newest if before is None else before
    params.update(words=words, within=within)
    exact = f"m.search_words @@ %(words)s::tsquery AND {scope}"
    indexed = f"{SCOPED} @@ %(words)s::tsquery AND {SCOPED} @@ %(within)s::tsquery AND {exact}"
    # One statement: each step a branch of a UNION ALL, newest ids first and disjoint, so
    # that their rows in order are newest first; the branches after the one that completes
    # `limit` rows are never run.
    steps = []
    if newest - high < WALK_AFTER_SPAN_MAX:
        steps.append(_step(exact, max(high - WALK, 0), high))
        high -= WALK
    for bits in WINDOWS:
        if high <= 0:
            break
        block = (high - 1) >> bits
        low = max(block - 1, 0) << bits
        blocks = " | ".join(f"T{bits}_{b}" for b in (block, block - 1) if b >= 0)
        steps.append(_step(f"{indexed} AND {SCOPED} @@ '{blocks}'::tsquery", low, high))
        high = low
    if high > 0:
        steps.append(_step(indexed, 0, high))
    if not steps:
        return []  # nothing below `before`
    cur.execute(f"SELECT * FROM ({' UNION ALL '.join(steps)}) AS found LIMIT %(limit)s", params)
    return [row_to_message(row) for row in cur]


def _step(where: str, low: int, high: int) -> str:
    """A branch: the newest `limit` messages with ids in [low, high) that meet `where`."""
    bounds = f"m.id >= {low:d} AND m.id < {high:d}"
    return f"({SELECT_MESSAGES} WHERE {where} AND {bounds} ORDER BY m.id DESC LIMIT %(limit)s)"
