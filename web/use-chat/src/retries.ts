/**
 * Requests refused for a passing reason (a busy server, a database hiccup), to send again later:
 * which codes count as passing, how long to wait, and what is waiting until when.
 */
import type { ConversationKey } from './state';
import type { ErrorCode } from './protocol';

/** A room's join, a conversation's latest page or catch-up, the conversations list. */
export type RetryKey = `join:${string}` | `history:${ConversationKey}` | 'conversations' | 'my_rooms';

/** Error codes that may not repeat if the same request is sent again later (busy server or database). */
export const PASSING_CODES: ReadonlySet<string> = new Set(['rate_limited', 'unavailable', 'internal']);

/** How long to wait before sending again what was refused for a passing reason (ms). */
export function retryDelay(code: ErrorCode): number {
  return code === 'rate_limited' ? 1000 : 3000;
}

export class Retries {
  /** when each refused request is sent again (epoch ms) */
  private readonly at = new Map<RetryKey, number>();

  constructor(private readonly now: () => number) {}

  /** Sends `key` again after `delayMs` (the earliest wins if it is already waiting). */
  later(key: RetryKey, delayMs: number): void {
    if (!this.at.has(key)) this.at.set(key, this.now() + delayMs);
  }

  has(key: RetryKey): boolean {
    return this.at.has(key);
  }

  delete(key: RetryKey): void {
    this.at.delete(key);
  }

  clear(): void {
    this.at.clear();
  }

  /** Takes out the keys whose wait is over at `now`, in the order they were put in. */
  takeDue(now: number): RetryKey[] {
    const due: RetryKey[] = [];
    for (const [key, at] of this.at) if (at <= now) due.push(key);
    for (const key of due) this.at.delete(key);
    return due;
  }
}
