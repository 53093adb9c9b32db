/**
 * Mentions as the server counts them (protocol §9): `@username` as a whole word, compared without
 * regard to case, or `@room`. Pure: shared by the page's highlighting and the unread-mention badge.
 */

/** Everyone in a room is mentioned by this name. */
export const ROOM_MENTION = 'room';

// A word character on either side makes it part of a longer word (an e-mail address, `@alice2`).
const WORD = '[\\p{L}\\p{N}\\p{M}_]';

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
}

/**
 * A global, case-insensitive pattern matching `@room` and `@<username>` as whole words; group 1 is
 * the name as written. Names are tried longest first, so `@room` never hides the user "room mate".
 */
export function mentionPattern(username: string | null | undefined): RegExp {
  const names = [ROOM_MENTION, ...(username ? [username] : [])].sort((a, b) => b.length - a.length);
  return new RegExp(`(?<!${WORD})@(${names.map(escapeRegExp).join('|')})(?!${WORD})`, 'giu');
}

/** Whether `content` mentions the user named `username` (or everyone, with `@room`). */
export function mentionsUser(content: string, username: string): boolean {
  return mentionPattern(username).test(content);
}

/** Who a mention matched by `mentionPattern(username)` names: the user (also a user called "room"), or the room. */
export function mentionKind(name: string, username: string | null | undefined): 'me' | 'room' {
  return username && new RegExp(`^${escapeRegExp(username)}$`, 'iu').test(name) ? 'me' : 'room';
}
