/**
 * Pure helpers on a room's or a conversation's message list (sorted by id, no duplicates).
 *
 * None of them changes its arguments, and most return their input list itself when nothing
 * changes, so that the state snapshot is only replaced when something did.
 */
import type { MessageId } from './protocol';

/** Merges `incoming` into the id-sorted, duplicate-free `list`. Returns `list` itself when nothing is new. */
export function mergeById<T extends { id: MessageId }>(list: T[], incoming: T[]): T[] {
  if (incoming.length === 0) return list;
  const seen = new Set<number>(list.map((m) => m.id));
  const fresh: T[] = [];
  for (const m of incoming) {
    if (!seen.has(m.id)) {
      seen.add(m.id);
      fresh.push(m);
    }
  }
  if (fresh.length === 0) return list;
  // Fast path: live messages arrive in id order after everything we have.
  fresh.sort((a, b) => a.id - b.id);
  if (list.length === 0 || fresh[0].id > list[list.length - 1].id) return list.concat(fresh);
  return list.concat(fresh).sort((a, b) => a.id - b.id);
}

/** The id of the newest message of `list`; null when it is empty. */
export function lastId<T extends { id: MessageId }>(list: T[]): MessageId | null {
  return list.length ? list[list.length - 1].id : null;
}

/**
 * `merged` (= `list` plus new messages) without its oldest messages beyond `max`, when it grew at
 * its end (new messages: a long session in a busy room would otherwise keep every message, in
 * memory and in the page). A list that only grew at its start (older pages) is kept whole.
 */
export function capped<T extends { id: MessageId }>(list: T[], merged: T[], max: number): T[] {
  return lastId(merged) === lastId(list) ? merged : trimmed(merged, max);
}

/** `list` without its oldest messages beyond `max` (those the reader left behind); `list` itself when it is short enough. */
export function trimmed<T extends { id: MessageId }>(list: T[], max: number): T[] {
  return list.length > max ? list.slice(list.length - max) : list;
}

/**
 * Whether a page of older messages asked for `before` the id `ref` joins `list`: not when the
 * message it was asked before has been dropped meanwhile (`maxMessages`), which would leave a hole
 * between the page and the rest that paging back never fills.
 */
export function reachesBack<T extends { id: MessageId }>(list: T[] | undefined, ref: MessageId | undefined): boolean {
  return !!list?.length && ref !== undefined && list[0].id <= ref;
}

/**
 * The messages of a list after its first (latest) `page` was merged. A full page may not reach the
 * live messages received before it (a conversation never opened, then a night offline): those
 * would sit beyond a hole that paging back from the oldest message never fills. They are dropped;
 * paging back from the page loads them again, in order.
 */
export function withoutHole<T extends { id: MessageId }>(list: T[], page: T[], full: boolean): T[] {
  if (!full || page.length === 0 || list.length === 0 || list[0].id >= page[0].id) return list;
  return list.filter((m) => m.id >= page[0].id);
}
