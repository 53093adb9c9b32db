"""Rewrites of stored data that schema.sql cannot spell in SQL, each done once per database.

schema.sql brings tables and columns up to date by itself. Some stored data must change
by rules only Python knows: the normal form of an emoji (app/emoji.py) has no SQL
spelling. Each such rewrite is named here and in `chat_upgrades` once done. app/schema.py
runs the ones not done in the transaction that loads schema.sql, under its lock: workers
starting together run each once, and nobody sees a database half rewritten.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .emoji import normal_emoji
from .event_store import REACTIONS_OF_M

log = logging.getLogger(__name__)

# Stored reactions in two forms of one emoji become one reaction, in the form new ones are
# stored in. The reactions to rewrite are few beside the table, but finding them takes a
# scan of message_reactions and message_events: once.
_FULLY_QUALIFY = f"""
CREATE TEMP TABLE chat_emoji_renamed ON COMMIT DROP AS
    SELECT * FROM unnest(%(old)s::text[], %(new)s::text[]) AS r(old, new);
CREATE TEMP TABLE chat_reactions_renamed ON COMMIT DROP AS
    SELECT DISTINCT x.message_id FROM message_reactions x JOIN chat_emoji_renamed r ON r.old = x.emoji;
-- One user's reactions with one emoji in two forms: the first is kept (its place in the
-- message's order), the rest go.
DELETE FROM message_reactions x USING (
    SELECT x.message_id, x.user_id, x.emoji,
           row_number() OVER (PARTITION BY x.message_id, x.user_id, COALESCE(r.new, x.emoji)
                              ORDER BY x.event_id) AS nth
    FROM message_reactions x LEFT JOIN chat_emoji_renamed r ON r.old = x.emoji
    WHERE x.message_id IN (SELECT message_id FROM chat_reactions_renamed)) AS d
WHERE d.nth > 1 AND x.message_id = d.message_id AND x.user_id = d.user_id AND x.emoji = d.emoji;
UPDATE message_reactions x SET emoji = r.new FROM chat_emoji_renamed r WHERE x.emoji = r.old;
-- (so that a replayed `reaction`, and a resend's answer, show the form the message shows)
UPDATE message_events e SET emoji = r.new FROM chat_emoji_renamed r WHERE e.emoji = r.old;
UPDATE messages m SET reactions = ({REACTIONS_OF_M.format("message_reactions")})
    WHERE m.id IN (SELECT message_id FROM chat_reactions_renamed);
"""


def fully_qualify_reactions(cur) -> None:
    """Store every reaction's emoji in its normal form, merging what then repeats."""
    cur.execute(
        """SELECT emoji FROM message_reactions
           UNION SELECT emoji FROM message_events WHERE emoji IS NOT NULL"""
    )
    renamed = {emoji: normal_emoji(emoji) for (emoji,) in cur}
    renamed = {old: new for old, new in renamed.items() if new != old}
    if renamed:
        cur.execute(_FULLY_QUALIFY, {"old": list(renamed), "new": list(renamed.values())})
        log.info("reactions rewritten to the normal form of their emoji: %d forms", len(renamed))


# Every upgrade, by the name chat_upgrades keeps of it, in the order they run.
UPGRADES: dict[str, Callable[[object], None]] = {
    "reactions in the normal form of their emoji": fully_qualify_reactions,
}


def pending(cur) -> list[str]:
    """The upgrades not done on this database (chat_upgrades must exist)."""
    cur.execute("SELECT name FROM chat_upgrades WHERE name = ANY(%s)", (list(UPGRADES),))
    done = {row[0] for row in cur}
    return [name for name in UPGRADES if name not in done]


def run(cur, names: list[str]) -> None:
    """Run these upgrades and note each done, in the caller's transaction."""
    for name in names:
        UPGRADES[name](cur)
        cur.execute("INSERT INTO chat_upgrades (name) VALUES (%s) ON CONFLICT DO NOTHING", (name,))
