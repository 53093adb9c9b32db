/**
 * Typing in DM conversations (a `typing` frame with `to`; received with `with`): sent at most once
 * per `typingThrottleMs` per conversation, shown for `typingTtlMs` or until the other user's DM comes.
 */
import { withDmTypingExpired } from './eventReducers';
import type { ResolvedOptions } from './options';
import type { UserId } from './protocol';
import type { SendQueue } from './sendQueue';
import type { Store } from './store';

type Opts = Pick<ResolvedOptions, 'now' | 'typingThrottleMs' | 'typingTtlMs'>;

export class DmTyping {
  private readonly sentAt = new Map<UserId, number>();
  /** expiry (epoch ms) of the typing shown, by the other user's id */
  private readonly until = new Map<UserId, number>();

  constructor(
    private readonly opts: Opts,
    private readonly store: Store,
    private readonly queue: SendQueue,
  ) {}

  /** Tells `to` I am typing to them; throttled. */
  typingTo = (to: UserId): void => {
    if (!Number.isInteger(to) || this.store.state.status !== 'open' || to === this.store.state.me?.userId) return;
    const now = this.opts.now();
    const last = this.sentAt.get(to);
    if (last !== undefined && now - last < this.opts.typingThrottleMs) return;
    if (this.queue.send({ type: 'typing', to }, true)) this.sentAt.set(to, now);
  };

  /** I sent `to` a DM: the next keystroke may tell them again (they stop showing it when it arrives). */
  wroteTo(to: UserId): void {
    this.sentAt.delete(to);
  }

  /** A typing event from `from` is shown: it goes after `typingTtlMs`. */
  onTyping(from: UserId): void {
    this.until.set(from, this.opts.now() + this.opts.typingTtlMs);
  }

  /** Typing shown longer than `typingTtlMs` goes. */
  expire(now: number): void {
    const gone = new Set<UserId>();
    for (const [peer, t] of this.until) if (t <= now) gone.add(peer);
    if (!gone.size) return;
    for (const peer of gone) this.until.delete(peer);
    this.store.update((s) => withDmTypingExpired(s, (peer) => gone.has(peer)));
  }

  /** The connection went away: nobody is shown typing. */
  reset(): void {
    this.until.clear();
    this.store.update((s) => withDmTypingExpired(s, () => true));
  }
}
