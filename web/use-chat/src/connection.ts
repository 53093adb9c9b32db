/**
 * The connection: one WebSocket at a time, authenticated with the first frame; reconnection with
 * capped, jittered backoff (reset once a connection stayed up `stableAfterMs`); the token renewed
 * on the open connection before it expires; an application `ping` after a silence, and a socket
 * that then stays silent dropped. It keeps the connection fields of the snapshot (`status`,
 * `attempt`, `nextRetryAt`, `lastCloseCode`) and hands every frame received to `onFrame`.
 */
import { backoffDelay } from './backoff';
import type { ResolvedOptions } from './options';
import { parseServerFrame, type ClientFrame, type ServerFrame } from './protocol';
import type { Store } from './store';
import type { TokenContext, WebSocketCtor, WebSocketLike } from './state';

type Timer = ReturnType<typeof setTimeout>;

const WS_OPEN = 1;
/** Application close code used when the client drops a socket that stopped answering. */
export const CLOSE_CLIENT_TIMEOUT = 4000;
export const CLOSE_UNAUTHORIZED = 4001;

export interface ConnectionHandlers {
  /** a frame arrived on the current socket */
  onFrame(frame: ServerFrame): void;
  /** the socket went away (closed, dropped or stopped): what was tied to it is to be reset */
  onDown(): void;
  /** the housekeeping timer fired (every `tickMs` while started) */
  onTick(): void;
  /** sends a frame within the send budget (queued when over it); false when not connected */
  send(frame: ClientFrame): boolean;
}

export class Connection {
  private ws: WebSocketLike | null = null;
  /** bumped for every attempt: events of older sockets/attempts are ignored */
  private gen = 0;
  private stopped = true;
  private authFailures = 0;
  private nextReason: TokenContext['reason'] = 'initial';
  private retryTimer: Timer | null = null;
  private welcomeTimer: Timer | null = null;
  private stableTimer: Timer | null = null;
  private refreshTimer: Timer | null = null;
  private tickTimer: ReturnType<typeof setInterval> | null = null;
  /** the token the current connection authenticated with (or last renewed with) */
  private connToken: string | null = null;
  private lastRxAt = 0;
  /** when the `ping` still waiting for an answer (any frame) was sent (epoch ms) */
  private pingSentAt: number | null = null;

  constructor(
    private readonly opts: ResolvedOptions,
    private readonly store: Store,
    private readonly handlers: ConnectionHandlers,
  ) {}

  /** Starts connecting (no-op while already running). */
  start = (): void => {
    if (!this.stopped) return;
    this.stopped = false;
    this.authFailures = 0;
    this.nextReason = 'initial';
    this.store.set({ status: 'connecting', attempt: 0, nextRetryAt: null });
    this.tickTimer = setInterval(this.handlers.onTick, this.opts.tickMs);
    this.attachBrowserHooks();
    void this.connect();
  };

  /** Closes with code 1000 and stops reconnecting. */
  stop = (): void => {
    if (this.stopped) return;
    this.stopped = true;
    this.gen++;
    this.clearConnTimers();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.stopTicking();
    this.closeSocket(1000, 'client closed');
    this.handlers.onDown();
    this.store.set({ status: 'closed', nextRetryAt: null });
  };

  /** Skips the remaining backoff delay (e.g. a "retry now" button, or the browser went online). */
  reconnectNow = (): void => {
    if (this.stopped) {
      if (this.store.state.status === 'unauthorized') this.start();
      return;
    }
    if (this.store.state.status !== 'reconnecting' || !this.retryTimer) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    void this.connect();
  };

  /** Puts a frame on the socket now (no budget: see SendQueue). False when there is no open socket. */
  sendRaw(frame: ClientFrame): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== WS_OPEN) return false;
    try {
      ws.send(JSON.stringify(frame));
    } catch {
      return false;
    }
    return true;
  }

  /** The server said `welcome`: the token was taken. Arms the backoff reset and the token renewal. */
  welcomed(): void {
    if (this.welcomeTimer) clearTimeout(this.welcomeTimer);
    this.welcomeTimer = null;
    this.authFailures = 0;
    this.pingSentAt = null;
    const gen = this.gen;
    this.stableTimer = setTimeout(() => {
      if (gen === this.gen) this.store.set({ attempt: 0 });
    }, this.opts.stableAfterMs);
    this.scheduleTokenRefresh();
  }

  /**
   * Keepalive, on every tick while open: a socket that does not answer a ping is dead (half-open
   * TCP, sleeping laptop) and is dropped (false). Silence is measured on what arrives only: frames
   * that get no answer (typing) prove nothing. And only an unanswered ping counts, not the time
   * since the last frame: a background tab's timer may fire once a minute, long after the answer came.
   */
  keepalive(now: number): boolean {
    const ping = this.opts.pingIntervalMs;
    if (ping <= 0) return true;
    if (this.pingSentAt !== null && this.lastRxAt >= this.pingSentAt) this.pingSentAt = null;
    if (this.pingSentAt !== null && now - this.pingSentAt > this.opts.pongTimeoutMs) {
      this.abandon(CLOSE_CLIENT_TIMEOUT, 'keepalive timeout');
      return false;
    }
    // Queued when over budget (one at a time), not skipped: a backlog must not starve it.
    if (this.pingSentAt === null && now - this.lastRxAt >= ping && this.handlers.send({ type: 'ping' })) this.pingSentAt = now;
    return true;
  }

  private onBrowserOnline = (): void => this.reconnectNow();

  private attachBrowserHooks(): void {
    const w = globalThis as { addEventListener?: (t: string, f: () => void) => void };
    if (typeof w.addEventListener === 'function' && typeof (globalThis as { document?: unknown }).document !== 'undefined') {
      w.addEventListener('online', this.onBrowserOnline);
    }
  }

  private stopTicking(): void {
    if (this.tickTimer) clearInterval(this.tickTimer);
    this.tickTimer = null;
    const w = globalThis as { removeEventListener?: (t: string, f: () => void) => void };
    if (typeof w.removeEventListener === 'function') w.removeEventListener('online', this.onBrowserOnline);
  }

  private clearConnTimers(): void {
    for (const t of [this.welcomeTimer, this.stableTimer, this.refreshTimer]) if (t) clearTimeout(t);
    this.welcomeTimer = this.stableTimer = this.refreshTimer = null;
  }

  private closeSocket(code: number, reason: string): void {
    const ws = this.ws;
    this.ws = null;
    if (!ws) return;
    detach(ws);
    try {
      ws.close(code, reason);
    } catch {
      /* ignore */
    }
  }

  private async connect(): Promise<void> {
    const gen = ++this.gen;
    const reason = this.nextReason;
    let token: string | null | undefined;
    try {
      token = await this.opts.getToken({ attempt: this.store.state.attempt, reason });
    } catch (e) {
      if (gen !== this.gen || this.stopped) return;
      this.store.pushError('token', `could not get a token: ${e instanceof Error ? e.message : String(e)}`);
      this.scheduleReconnect();
      return;
    }
    if (gen !== this.gen || this.stopped) return;
    if (!token) {
      this.giveUpUnauthorized('no credentials');
      return;
    }
    const Ctor = this.opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketCtor }).WebSocket;
    if (!Ctor) {
      this.store.pushError('internal', 'no WebSocket implementation available');
      this.stop();
      return;
    }
    let ws: WebSocketLike;
    try {
      ws = new Ctor(this.opts.url);
    } catch (e) {
      this.store.pushError('internal', `cannot open WebSocket: ${e instanceof Error ? e.message : String(e)}`);
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.connToken = token;
    const authToken = token;
    ws.onopen = () => {
      if (gen !== this.gen) return;
      // First frame, always: keeps the token out of URLs and access logs (PROTOCOL.md §1).
      this.sendRaw({ type: 'auth', token: authToken });
      this.welcomeTimer = setTimeout(() => {
        if (gen === this.gen) this.abandon(CLOSE_CLIENT_TIMEOUT, 'no welcome');
      }, this.opts.welcomeTimeoutMs);
    };
    ws.onmessage = (ev: { data: unknown }) => {
      if (gen !== this.gen) return;
      this.lastRxAt = this.opts.now();
      if (typeof ev.data !== 'string') return;
      const frame = parseServerFrame(ev.data);
      if (frame) this.handlers.onFrame(frame);
    };
    ws.onerror = () => {
      /* a close event always follows */
    };
    ws.onclose = (ev: { code: number; reason: string }) => {
      if (gen !== this.gen) return;
      this.onClosed(ev.code);
    };
  }

  /** Arms the renewal of the connection's token before it expires (see `refreshBeforeExpiryMs`). */
  private scheduleTokenRefresh(): void {
    const lead = this.opts.refreshBeforeExpiryMs;
    const expiresAt = this.connToken ? this.opts.tokenExpiresAt(this.connToken) : null;
    if (lead <= 0 || expiresAt === null) return;
    const left = expiresAt - this.opts.now();
    if (left <= 0) return; // the server closes it at once: 'unauthorized' follows
    const gen = this.gen;
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(
      () => {
        this.refreshTimer = null;
        if (gen === this.gen) void this.refreshToken(gen);
      },
      left > 2 * lead ? left - lead : left / 2,
    );
  }

  /** Asks for a fresh token and, if it is one, authenticates the open connection with it. */
  private async refreshToken(gen: number): Promise<void> {
    let token: string | null | undefined;
    try {
      token = await this.opts.getToken({ attempt: 0, reason: 'refresh' });
    } catch {
      return; // not fatal: at the expiry the server closes, and reconnecting asks again
    }
    if (gen !== this.gen || !token || token === this.connToken) return;
    if (this.sendRaw({ type: 'auth', token })) {
      this.connToken = token;
      this.scheduleTokenRefresh();
    }
  }

  /** Drops the current socket ourselves (it stopped answering) and goes through the normal retry path. */
  private abandon(code: number, reason: string): void {
    const ws = this.ws;
    if (ws) {
      detach(ws);
      try {
        ws.close(code, reason);
      } catch {
        /* ignore */
      }
    }
    this.onClosed(code);
  }

  private onClosed(code: number): void {
    this.gen++;
    this.ws = null;
    this.clearConnTimers();
    this.handlers.onDown();
    this.store.set({ lastCloseCode: code });
    if (this.stopped) return;
    if (code === CLOSE_UNAUTHORIZED) {
      this.authFailures++;
      if (this.authFailures >= this.opts.maxAuthFailures) {
        this.giveUpUnauthorized('the server refused the token');
        return;
      }
      this.nextReason = 'unauthorized';
      // The server is up and answered: the wait grows with the refusals, not with the attempts
      // of an outage before (the user would wait up to capMs per refusal to be asked to sign in).
      this.scheduleReconnect(0, this.authFailures - 1);
      return;
    }
    this.nextReason = 'reconnect';
    this.scheduleReconnect(code === 1001 ? this.goingAwayDelay() : 0);
  }

  private goingAwayDelay(): number {
    const { goingAwayMinMs: lo, goingAwayMaxMs: hi } = this.opts;
    return Math.round(lo + Math.max(0, hi - lo) * this.opts.random());
  }

  private giveUpUnauthorized(why: string): void {
    this.store.pushError('unauthorized', `not signed in: ${why}`);
    this.stopped = true;
    this.gen++;
    this.stopTicking();
    this.closeSocket(1000, 'unauthorized');
    this.store.set({ status: 'unauthorized', nextRetryAt: null });
  }

  private scheduleReconnect(minDelay = 0, delayAttempt?: number): void {
    if (this.stopped) return;
    const attempt = this.store.state.attempt;
    const delay = Math.max(minDelay, backoffDelay(delayAttempt ?? attempt, this.opts.backoff, this.opts.random));
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.connect();
    }, delay);
    this.store.set({ status: 'reconnecting', attempt: attempt + 1, nextRetryAt: this.opts.now() + delay });
  }
}

function detach(ws: WebSocketLike): void {
  ws.onopen = ws.onmessage = ws.onerror = null;
  ws.onclose = null;
}
