/**
 * The send queue: every frame goes through a per-connection budget (a token bucket below the
 * server's rate limit). Control frames over budget wait here in order, or are skipped when
 * `droppable` (typing, rooms refreshes); the outbox (outbox.ts) is pumped once they are out.
 */
import type { ClientFrame } from './protocol';
import type { ResolvedOptions } from './options';

type Timer = ReturnType<typeof setTimeout>;

export interface SendQueueDeps {
  /** whether the connection is authenticated (frames may flow) */
  isOpen(): boolean;
  /** puts a frame on the socket; false when there is no open socket */
  sendRaw(frame: ClientFrame): boolean;
  /** called when the waiting control frames are out and the budget has room for the outbox */
  onDrained(): void;
}

export class SendQueue {
  /** budget (tokens of the bucket) and when it was last refilled (epoch ms) */
  private tokens = 0;
  private tokensAt = 0;
  /** control frames waiting for budget, sent before any outbox entry */
  private waiting: ClientFrame[] = [];
  private drainTimer: Timer | null = null;

  constructor(
    private readonly opts: Pick<ResolvedOptions, 'now' | 'rateBurst' | 'ratePerSecond'>,
    private readonly deps: SendQueueDeps,
  ) {}

  /** A new connection starts with the server's full burst allowance and nothing waiting. */
  fill(): void {
    this.tokens = this.opts.rateBurst;
    this.tokensAt = this.opts.now();
    this.waiting = [];
  }

  /** The connection went away: what waited was for it. */
  reset(): void {
    if (this.drainTimer) clearTimeout(this.drainTimer);
    this.drainTimer = null;
    this.waiting = [];
  }

  /**
   * Sends on an authenticated connection, within the budget. `droppable` frames are skipped when
   * over budget; the others wait in order. False when not connected (or skipped).
   */
  send(frame: ClientFrame, droppable = false): boolean {
    if (!this.deps.isOpen()) return false;
    if (this.trySendNow(frame)) return true;
    if (droppable) return false;
    this.waiting.push(frame);
    this.scheduleDrain();
    return true;
  }

  /** Sends now if the budget allows and nothing is waiting before it. */
  trySendNow(frame: ClientFrame): boolean {
    if (!this.deps.isOpen() || this.waiting.length) return false;
    this.refill();
    if (this.tokens < 1) return false;
    if (!this.deps.sendRaw(frame)) return false;
    this.tokens -= 1;
    return true;
  }

  /** Drains the waiting frames (then the outbox) once the budget has room again. */
  scheduleDrain(): void {
    if (this.drainTimer) return;
    const rate = Math.max(0.1, this.opts.ratePerSecond);
    const wait = Math.max(10, Math.ceil(((1 - this.tokens) / rate) * 1000));
    this.drainTimer = setTimeout(() => {
      this.drainTimer = null;
      this.drain();
    }, wait);
  }

  private refill(): void {
    const now = this.opts.now();
    const rate = Math.max(0.1, this.opts.ratePerSecond);
    this.tokens = Math.min(this.opts.rateBurst, this.tokens + ((now - this.tokensAt) / 1000) * rate);
    this.tokensAt = now;
  }

  /** Waiting control frames first, then the outbox. */
  private drain(): void {
    if (!this.deps.isOpen()) return;
    this.refill();
    while (this.waiting.length && this.tokens >= 1) {
      if (!this.deps.sendRaw(this.waiting[0])) break;
      this.waiting.shift();
      this.tokens -= 1;
    }
    if (this.waiting.length) this.scheduleDrain();
    else this.deps.onDrained();
  }
}
