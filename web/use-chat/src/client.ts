/**
 * ChatClient: the framework-free engine behind `useChat`.
 *
 * It owns one WebSocket at a time and a plain immutable state snapshot (`getState()`), and tells
 * subscribers whenever the snapshot is replaced. Everything the protocol promises about recovery
 * (PROTOCOL.md §5) is used here:
 *  - every connection authenticates with the first frame `{"type":"auth"}` (token from an async
 *    getter, asked again on every attempt);
 *  - after a drop it reconnects with capped, jittered exponential backoff; the backoff only resets
 *    once a connection stayed up `stableAfterMs`;
 *  - on every (re)connection it re-joins its rooms with `since` = last id seen, catches up DMs with
 *    `dm_history after`, and re-sends unacknowledged frames with the same `clientId` (the server
 *    never stores a clientId twice), while received messages are de-duplicated by id;
 *  - it uses the server's extensions where they are offered and does without them elsewhere: the
 *    `conversations` list (DM partners on a new device), errors naming the request they answer (a
 *    refused message is marked failed, a refused join forgotten or tried again later), and the
 *    online count of crowded rooms (`join_ack.data.online`).
 *
 * The shapes of its state and options are in state.ts, the pure helpers on message lists in
 * messageLists.ts, those on rooms, conversations and online counts in rooms.ts.
 */
import { backoffDelay } from './backoff';
import { capped, lastId, mergeById, reachesBack, trimmed, withoutHole } from './messageLists';
import {
  contentProblem,
  HISTORY_PAGE_MAX,
  isValidRoomName,
  MAX_CLIENT_ID_LENGTH,
  parseServerFrame,
  type ClientFrame,
  type ConversationInfo,
  type DirectMessage,
  type ErrorAbout,
  type ErrorCode,
  type ErrorFrame,
  type MessageId,
  type RoomMessage,
  type ServerFrame,
  type UserId,
  type UserRef,
} from './protocol';
import { dedupeUsers, newDm, newRoom, onlineAfter, withListedUsers, withOnlineCounts, withRoomOnline } from './rooms';
import type {
  ChatClientOptions,
  ChatError,
  ChatState,
  DmState,
  PendingMessage,
  RoomState,
  TokenContext,
  WebSocketCtor,
  WebSocketLike,
} from './state';

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

type Timer = ReturnType<typeof setTimeout>;
/** A history request waiting for its answer; `ref` is its `before` / `after` id. */
type HistoryRequest = { kind: 'latest' | 'before' | 'after'; limit: number; ref?: MessageId; at: number };
/** A request refused for a passing reason, to send again later: a room's join, its latest page, a conversation's latest page or catch-up, the conversations list. */
type RetryKey = `join:${string}` | `history:${string}` | `dm:${number}` | 'conversations';

/** Error codes that may not repeat if the same request is sent again later (busy server or database). */
const PASSING_CODES: ReadonlySet<string> = new Set(['rate_limited', 'unavailable', 'internal']);
/** The server's "not now, try again later": a message refused so was not lost on its way, and is not given up on. */
const TRY_LATER_CODES: ReadonlySet<string> = new Set(['rate_limited', 'unavailable']);
/** Refusals of a message that sending it again cannot change (its content or recipient is wrong). */
const FINAL_CODES: ReadonlySet<string> = new Set(['invalid', 'too_large', 'not_found', 'bad_json', 'unknown_type']);

const WS_OPEN = 1;
/** How old the server's `rooms` answer may be (it reads the list at most once a second), plus a margin. */
const ROOMS_LIST_MAX_AGE_MS = 1_500;
/** Application close code used when the client drops a socket that stopped answering. */
export const CLOSE_CLIENT_TIMEOUT = 4000;
export const CLOSE_UNAUTHORIZED = 4001;

function defaultClientId(): string {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  // Fallback for old browsers / insecure origins (randomUUID needs a secure context).
  const bytes = new Uint8Array(16);
  if (c && typeof c.getRandomValues === 'function') c.getRandomValues(bytes);
  else for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const h = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The `exp` claim of a JWT in epoch ms (not verified: only the server can), or null. */
export function jwtExpiresAt(token: string): number | null {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const exp = (JSON.parse(atob(payload)) as { exp?: unknown }).exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : null;
  } catch {
    return null;
  }
}

/** What `takeAnswered` returns for an answer to a request given up on: its messages are merged, nothing else. */
const STALE = Object.freeze({ kind: 'stale', limit: 0, at: 0 } as const);

/**
 * Takes the waiting request a history answer is for out of `q`. A server that echoes the page
 * asked for (`limit`, `before` / `after`: this one does) names it, so that an answer arriving
 * after its request was given up on (`historyTimeoutMs`) is not taken for the next request, whose
 * `hasMore` it would set from the wrong page: such an answer is STALE. Without the echo, answers
 * come in order: the oldest request. undefined: nothing was asked (a server sending on its own).
 */
function takeAnswered(
  q: HistoryRequest[] | undefined,
  echo: { limit?: unknown; before?: unknown; after?: unknown },
): HistoryRequest | typeof STALE | undefined {
  if (typeof echo.limit !== 'number') return q?.shift();
  const kind = typeof echo.before === 'number' ? 'before' : typeof echo.after === 'number' ? 'after' : 'latest';
  const ref = kind === 'before' ? echo.before : kind === 'after' ? echo.after : undefined;
  // Not by `limit`: the server caps it at its own maximum, which may be below the one asked for.
  const i = q ? q.findIndex((r) => r.kind === kind && r.ref === ref) : -1;
  return i < 0 ? STALE : q!.splice(i, 1)[0];
}

/** Whether trying a failed outbox entry again makes sense: not when the server refused its content or recipient. */
export function isRetryable(p: PendingMessage): boolean {
  return !p.error || !FINAL_CODES.has(p.error.code);
}

/** How long to wait before sending again what was refused for a passing reason (ms). */
function retryDelay(code: ErrorCode): number {
  return code === 'rate_limited' ? 1000 : 3000;
}

/** What an error frame names of the request it answers (only the fields it has). */
function aboutOf(frame: ErrorFrame): ErrorAbout {
  const about: ErrorAbout = {};
  if (frame.requestType !== undefined) about.requestType = frame.requestType;
  if (frame.room !== undefined) about.room = frame.room;
  if (frame.clientId !== undefined) about.clientId = frame.clientId;
  if (frame.to !== undefined) about.to = frame.to;
  if (frame.with !== undefined) about.with = frame.with;
  return about;
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

export class ChatClient {
  private readonly opts: Required<
    Omit<ChatClientOptions, 'initialRooms' | 'initialOutbox' | 'WebSocket' | 'backoff' | 'onError' | 'onMessage' | 'onDm'>
  > &
    Pick<ChatClientOptions, 'initialRooms' | 'initialOutbox' | 'WebSocket' | 'backoff' | 'onError' | 'onMessage' | 'onDm'>;

  private state: ChatState;
  private readonly listeners = new Set<() => void>();

  private ws: WebSocketLike | null = null;
  /** bumped for every attempt: events of older sockets/attempts are ignored */
  private gen = 0;
  private stopped = true;
  private authFailures = 0;
  private nextReason: TokenContext['reason'] = 'initial';

  private retryTimer: Timer | null = null;
  private welcomeTimer: Timer | null = null;
  private stableTimer: Timer | null = null;
  private tickTimer: ReturnType<typeof setInterval> | null = null;
  private pumpTimer: Timer | null = null;
  private refreshTimer: Timer | null = null;
  /** the token the current connection authenticated with (or last renewed with) */
  private connToken: string | null = null;
  /** send budget (token bucket), reset on every connection */
  private tokens = 0;
  private tokensAt = 0;
  /** control frames waiting for budget, sent before any outbox entry */
  private txQueue: ClientFrame[] = [];

  private lastRxAt = 0;
  /** when the `ping` still waiting for an answer (any frame) was sent (epoch ms) */
  private pingSentAt: number | null = null;
  /** when the periodic `rooms` refresh is due (epoch ms); 0: at the next tick */
  private roomsDueAt = 0;
  private errorSeq = 0;
  private readonly typingSentAt = new Map<string, number>();
  /** expiry (epoch ms) of received typing events, by room then user id */
  private readonly typingUntil = new Map<string, Map<number, number>>();
  /** outstanding history requests per room / per DM peer, in sending order (answers come in order) */
  private readonly roomHistoryQ = new Map<string, HistoryRequest[]>();
  private readonly dmHistoryQ = new Map<number, HistoryRequest[]>();
  /** requests refused for a passing reason (rate_limited, unavailable…), sent again at this time (epoch ms) */
  private readonly retryAt = new Map<RetryKey, number>();
  /** conversations opened (`openDm`) whose latest page has not arrived yet: loaded on the next connection */
  private readonly dmsToOpen = new Set<number>();
  /** when the `conversations` request waiting for its answer on this connection was sent (epoch ms) */
  private conversationsAskedAt: number | null = null;
  /**
   * Per loaded conversation, its newest id when this connection said `welcome`, until its
   * catch-up is complete. DMs arrive live from `welcome` on, before the catch-up is asked for (it
   * waits for the `conversations` answer): it starts from here, not from a live message that
   * would skip everything sent while this client was away.
   */
  private readonly dmSeenUpTo = new Map<number, MessageId>();
  /** rooms / conversations whose reader is away from the newest messages: nothing is dropped from them (`maxMessages`) */
  private readonly readingBackRooms = new Set<string>();
  private readonly readingBackDms = new Set<number>();

  constructor(options: ChatClientOptions) {
    this.opts = {
      stableAfterMs: 10_000,
      welcomeTimeoutMs: 10_000,
      pingIntervalMs: 25_000,
      pongTimeoutMs: 10_000,
      historyPageSize: 50,
      maxMessages: 1000,
      typingThrottleMs: 3_000,
      typingTtlMs: 5_000,
      resendAfterMs: 8_000,
      maxSendAttempts: 5,
      maxAuthFailures: 3,
      refreshBeforeExpiryMs: 60_000,
      tokenExpiresAt: jwtExpiresAt,
      goingAwayMinMs: 1_000,
      rateBurst: 24,
      ratePerSecond: 8,
      goingAwayMaxMs: 3_000,
      roomsRefreshMs: 30_000,
      roomsRefreshJitter: 0.5,
      historyTimeoutMs: 15_000,
      tickMs: 1_000,
      maxErrors: 5,
      random: Math.random,
      generateClientId: defaultClientId,
      now: Date.now,
      ...options,
    };
    this.opts.historyPageSize = Math.max(1, Math.min(HISTORY_PAGE_MAX, Math.floor(this.opts.historyPageSize)));
    this.opts.maxMessages = Math.max(this.opts.historyPageSize, Math.floor(this.opts.maxMessages));
    const joined: Record<string, RoomState> = {};
    for (const r of options.initialRooms ?? []) if (isValidRoomName(r)) joined[r] = newRoom(r);
    const outbox = (options.initialOutbox ?? [])
      .filter((p) => (p.kind === 'message' ? !!joined[p.room!] : Number.isInteger(p.to)))
      .map((p) => (p.status === 'sent' ? { ...p, status: 'queued' as const } : { ...p }));
    const dms: Record<number, DmState> = {};
    for (const p of outbox) if (p.kind === 'dm' && !dms[p.to!]) dms[p.to!] = newDm(p.to!, `user ${p.to}`);
    this.state = {
      status: 'idle',
      me: null,
      attempt: 0,
      nextRetryAt: null,
      lastCloseCode: null,
      rooms: [],
      joined,
      dms,
      users: {},
      outbox,
      errors: [],
    };
  }

  // ----- store plumbing ----------------------------------------------------

  getState = (): ChatState => this.state;

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  };

  private set(patch: Partial<ChatState>): void {
    this.state = { ...this.state, ...patch };
    for (const l of [...this.listeners]) l();
  }

  private patchRoom(name: string, fn: (r: RoomState) => RoomState): void {
    const r = this.state.joined[name];
    if (!r) return;
    const next = fn(r);
    if (next !== r) this.set({ joined: { ...this.state.joined, [name]: next } });
  }

  private patchDm(userId: UserId, fn: (d: DmState) => DmState, create?: string): void {
    let d = this.state.dms[userId];
    if (!d) {
      if (create === undefined) return;
      d = newDm(userId, create);
    }
    const next = fn(d);
    if (next !== this.state.dms[userId]) this.set({ dms: { ...this.state.dms, [userId]: next } });
  }

  private rememberUsers(users: UserRef[]): void {
    let changed = false;
    const all = { ...this.state.users };
    for (const u of users) {
      if (typeof u.userId !== 'number' || !u.username) continue;
      if (all[u.userId]?.username !== u.username) {
        all[u.userId] = { userId: u.userId, username: u.username };
        changed = true;
      }
    }
    if (changed) this.set({ users: all });
  }

  private pushError(code: ErrorCode, message: string, about: ErrorAbout = {}): ChatError {
    const err: ChatError = { id: ++this.errorSeq, code, message, at: this.opts.now(), ...about };
    const errors = [...this.state.errors, err].slice(-this.opts.maxErrors);
    this.set({ errors });
    try {
      this.opts.onError?.(err);
    } catch {
      /* a throwing callback must not break the client */
    }
    return err;
  }

  // ----- lifecycle ---------------------------------------------------------

  /** Starts connecting (no-op while already running). */
  start = (): void => {
    if (!this.stopped) return;
    this.stopped = false;
    this.authFailures = 0;
    this.nextReason = 'initial';
    this.set({ status: 'connecting', attempt: 0, nextRetryAt: null });
    this.tickTimer = setInterval(this.tick, this.opts.tickMs);
    this.attachBrowserHooks();
    void this.connect();
  };

  /** Closes with code 1000 and stops reconnecting. State (messages, outbox) is kept; start() resumes. */
  stop = (): void => {
    if (this.stopped) return;
    this.stopped = true;
    this.gen++;
    this.clearConnTimers();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.tickTimer) clearInterval(this.tickTimer);
    this.tickTimer = null;
    this.detachBrowserHooks();
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      detach(ws);
      try {
        ws.close(1000, 'client closed');
      } catch {
        /* ignore */
      }
    }
    this.resetConnectionState();
    this.set({ status: 'closed', nextRetryAt: null });
  };

  /** Skips the remaining backoff delay (e.g. a "retry now" button, or the browser went online). */
  reconnectNow = (): void => {
    if (this.stopped) {
      if (this.state.status === 'unauthorized') this.start();
      return;
    }
    if (this.state.status !== 'reconnecting' || !this.retryTimer) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    void this.connect();
  };

  private onBrowserOnline = (): void => this.reconnectNow();

  private attachBrowserHooks(): void {
    const w = globalThis as { addEventListener?: (t: string, f: () => void) => void };
    if (typeof w.addEventListener === 'function' && typeof (globalThis as { document?: unknown }).document !== 'undefined') {
      w.addEventListener('online', this.onBrowserOnline);
    }
  }

  private detachBrowserHooks(): void {
    const w = globalThis as { removeEventListener?: (t: string, f: () => void) => void };
    if (typeof w.removeEventListener === 'function') w.removeEventListener('online', this.onBrowserOnline);
  }

  private clearConnTimers(): void {
    for (const t of [this.welcomeTimer, this.stableTimer, this.pumpTimer, this.refreshTimer]) if (t) clearTimeout(t);
    this.welcomeTimer = this.stableTimer = this.pumpTimer = this.refreshTimer = null;
  }

  private async connect(): Promise<void> {
    const gen = ++this.gen;
    const reason = this.nextReason;
    let token: string | null | undefined;
    try {
      token = await this.opts.getToken({ attempt: this.state.attempt, reason });
    } catch (e) {
      if (gen !== this.gen || this.stopped) return;
      this.pushError('token', `could not get a token: ${e instanceof Error ? e.message : String(e)}`);
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
      this.pushError('internal', 'no WebSocket implementation available');
      this.stop();
      return;
    }
    let ws: WebSocketLike;
    try {
      ws = new Ctor(this.opts.url);
    } catch (e) {
      this.pushError('internal', `cannot open WebSocket: ${e instanceof Error ? e.message : String(e)}`);
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
      if (frame) this.handle(frame);
    };
    ws.onerror = () => {
      /* a close event always follows */
    };
    ws.onclose = (ev: { code: number; reason: string }) => {
      if (gen !== this.gen) return;
      this.onClosed(ev.code, ev.reason);
    };
  }

  /** What an answer nobody asked for is taken as: the latest page. */
  private unaskedLatest(): HistoryRequest {
    return { kind: 'latest', limit: this.opts.historyPageSize, at: 0 };
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
    this.onClosed(code, reason);
  }

  private onClosed(code: number, _reason: string): void {
    this.gen++;
    this.ws = null;
    this.clearConnTimers();
    this.resetConnectionState();
    this.set({ lastCloseCode: code });
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

  /** What was tied to the socket that just went away. Messages, DMs and the outbox are kept. */
  private resetConnectionState(): void {
    this.txQueue = [];
    this.roomHistoryQ.clear();
    this.dmHistoryQ.clear();
    this.retryAt.clear();
    this.conversationsAskedAt = null;
    this.typingUntil.clear();
    // Nothing is in flight any more: whatever was sent must be sent again on the next connection.
    const outbox = this.state.outbox.map((p) => (p.status === 'sent' ? { ...p, status: 'queued' as const } : p));
    const joined: Record<string, RoomState> = {};
    for (const [k, r] of Object.entries(this.state.joined)) {
      joined[k] = { ...r, status: 'joining', typing: [], users: [], online: null, loadingOlder: false };
    }
    const dms: Record<number, DmState> = {};
    for (const [k, d] of Object.entries(this.state.dms)) dms[Number(k)] = d.loadingOlder ? { ...d, loadingOlder: false } : d;
    this.set({ outbox, joined, dms });
  }

  private giveUpUnauthorized(why: string): void {
    this.pushError('unauthorized', `not signed in: ${why}`);
    this.stopped = true;
    this.gen++;
    if (this.tickTimer) clearInterval(this.tickTimer);
    this.tickTimer = null;
    this.detachBrowserHooks();
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      detach(ws);
      try {
        ws.close(1000, 'unauthorized');
      } catch {
        /* ignore */
      }
    }
    this.set({ status: 'unauthorized', nextRetryAt: null });
  }

  private scheduleReconnect(minDelay = 0, delayAttempt?: number): void {
    if (this.stopped) return;
    const attempt = this.state.attempt;
    const delay = Math.max(minDelay, backoffDelay(delayAttempt ?? attempt, this.opts.backoff, this.opts.random));
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.connect();
    }, delay);
    this.set({ status: 'reconnecting', attempt: attempt + 1, nextRetryAt: this.opts.now() + delay });
  }

  // ----- sending -----------------------------------------------------------

  private sendRaw(frame: ClientFrame): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== WS_OPEN) return false;
    try {
      ws.send(JSON.stringify(frame));
    } catch {
      return false;
    }
    return true;
  }

  private refill(): void {
    const now = this.opts.now();
    const rate = Math.max(0.1, this.opts.ratePerSecond);
    this.tokens = Math.min(this.opts.rateBurst, this.tokens + ((now - this.tokensAt) / 1000) * rate);
    this.tokensAt = now;
  }

  /** Sends now if the budget allows and nothing is waiting before it. */
  private trySendNow(frame: ClientFrame): boolean {
    if (this.state.status !== 'open' || this.txQueue.length) return false;
    this.refill();
    if (this.tokens < 1) return false;
    if (!this.sendRaw(frame)) return false;
    this.tokens -= 1;
    return true;
  }

  /**
   * Sends on an authenticated connection, within the budget. `droppable` frames (typing,
   * rooms refreshes) are skipped when over budget; the others wait in order. False when not connected.
   */
  private send(frame: ClientFrame, droppable = false): boolean {
    if (this.state.status !== 'open') return false;
    if (this.trySendNow(frame)) return true;
    if (droppable) return false;
    this.txQueue.push(frame);
    this.scheduleDrain();
    return true;
  }

  private scheduleDrain(): void {
    if (this.pumpTimer) return;
    const rate = Math.max(0.1, this.opts.ratePerSecond);
    const wait = Math.max(10, Math.ceil(((1 - this.tokens) / rate) * 1000));
    this.pumpTimer = setTimeout(() => {
      this.pumpTimer = null;
      this.drain();
    }, wait);
  }

  /** Waiting control frames first, then the outbox. */
  private drain(): void {
    if (this.state.status !== 'open') return;
    this.refill();
    while (this.txQueue.length && this.tokens >= 1) {
      if (!this.sendRaw(this.txQueue[0])) break;
      this.txQueue.shift();
      this.tokens -= 1;
    }
    if (this.txQueue.length) this.scheduleDrain();
    else this.pump();
  }

  private requestRoomHistory(room: string, kind: HistoryRequest['kind'], ref?: MessageId): void {
    const limit = this.opts.historyPageSize;
    const frame: ClientFrame = { type: 'room_history', room, limit };
    if (kind === 'before' && ref !== undefined) frame.before = ref;
    if (kind === 'after' && ref !== undefined) frame.after = ref;
    if (!this.send(frame)) return;
    const q = this.roomHistoryQ.get(room) ?? [];
    q.push({ kind, limit, ref: kind === 'latest' ? undefined : ref, at: this.opts.now() });
    this.roomHistoryQ.set(room, q);
  }

  private requestDmHistory(peer: UserId, kind: HistoryRequest['kind'], ref?: MessageId): boolean {
    const limit = this.opts.historyPageSize;
    const frame: ClientFrame = { type: 'dm_history', with: peer, limit };
    if (kind === 'before' && ref !== undefined) frame.before = ref;
    if (kind === 'after' && ref !== undefined) frame.after = ref;
    if (!this.send(frame)) return false;
    const q = this.dmHistoryQ.get(peer) ?? [];
    q.push({ kind, limit, ref: kind === 'latest' ? undefined : ref, at: this.opts.now() });
    this.dmHistoryQ.set(peer, q);
    return true;
  }

  private transmit(p: PendingMessage): PendingMessage {
    const frame: ClientFrame =
      p.kind === 'message'
        ? { type: 'message', room: p.room!, content: p.content, clientId: p.clientId }
        : { type: 'dm', to: p.to!, content: p.content, clientId: p.clientId };
    if (!this.trySendNow(frame)) return p;
    return { ...p, status: 'sent', attempts: p.attempts + 1, lastSentAt: this.opts.now() };
  }

  /** After `welcome`: bring the server up to date with what this client is and had. */
  private resync(): void {
    for (const room of Object.values(this.state.joined)) this.sendJoin(room);
    for (const dm of Object.values(this.state.dms)) this.loadDmIfOpened(dm);
    this.refreshRooms();
    // Names the conversations with news (caught up then) and those this client does not know yet
    // (new device, reloaded page). Without it (older servers) every loaded conversation catches up.
    this.requestConversations();
    // Same clientId as before: the server answers with the stored message instead of storing it twice.
    this.pump();
  }

  /**
   * Joins a room on this connection. Once its history is loaded, with `since` = the last id seen:
   * everything after it is replayed, then live (no gap, no duplicate); else plainly, followed by a
   * request for the latest page.
   */
  private sendJoin(room: RoomState): void {
    if (room.historyLoaded) {
      this.send({ type: 'join', room: room.name, since: lastId(room.messages) ?? 0 });
      return;
    }
    this.send({ type: 'join', room: room.name });
    if (!this.roomHistoryQ.get(room.name)?.some((q) => q.kind === 'latest')) this.requestRoomHistory(room.name, 'latest');
  }

  /**
   * An unloaded conversation gets its latest page if it was opened or has messages (seen live);
   * one that is only listed (`conversations`, `addDm`) is loaded when it is opened.
   */
  private loadDmIfOpened(dm: DmState): void {
    if (!dm.historyLoaded && (dm.messages.length || this.dmsToOpen.has(dm.userId))) {
      this.requestDmHistory(dm.userId, 'latest');
    }
  }

  /** Catches up a loaded conversation after the last id seen before this connection (0 if it was empty): pages follow until done. */
  private catchUpDm(dm: DmState): void {
    this.requestDmHistory(dm.userId, 'after', this.caughtUpTo(dm));
  }

  /** The id up to which a loaded conversation is known to be complete. */
  private caughtUpTo(dm: DmState): MessageId {
    return this.dmSeenUpTo.get(dm.userId) ?? lastId(dm.messages) ?? 0;
  }

  /** Catches up every loaded conversation, for want of a `conversations` list naming those with news. */
  private catchUpAllDms(): void {
    for (const d of Object.values(this.state.dms)) if (this.missesNewer(d, Number.POSITIVE_INFINITY)) this.catchUpDm(d);
  }

  /** Asks for my DM partners (an extension: a server without it answers unknown_type, which is ignored). */
  private requestConversations(): void {
    if (this.send({ type: 'conversations' })) this.conversationsAskedAt = this.opts.now();
  }

  /** Sends a refused request again after `delayMs` (the earliest wins if it is already waiting). */
  private retryLater(key: RetryKey, delayMs: number): void {
    if (!this.retryAt.has(key)) this.retryAt.set(key, this.opts.now() + delayMs);
  }

  /** Sends again the refused requests whose wait is over. */
  private runDueRetries(now: number): void {
    for (const [key, at] of [...this.retryAt]) {
      if (at > now) continue;
      this.retryAt.delete(key);
      if (key === 'conversations') {
        this.requestConversations();
        continue;
      }
      if (key.startsWith('dm:')) {
        const d = this.state.dms[Number(key.slice(3))];
        if (!d || this.dmHistoryQ.get(d.userId)?.some((q) => q.kind !== 'before')) continue;
        if (d.historyLoaded) this.catchUpDm(d);
        else this.requestDmHistory(d.userId, 'latest');
        continue;
      }
      const room = this.state.joined[key.slice(key.indexOf(':') + 1)];
      if (!room) continue;
      if (key.startsWith('join:')) this.sendJoin(room);
      else if (!room.historyLoaded) this.requestRoomHistory(room.name, 'latest');
    }
  }

  /**
   * Puts outbox entries on the socket, oldest first, within the send budget: new ones, ones to
   * re-send after a reconnection, and ones whose echo did not come within resendAfterMs.
   * Order is kept: once an entry has to wait, the entries behind it wait too.
   */
  private pump(): void {
    if (this.state.status !== 'open') return;
    const now = this.opts.now();
    let changed = false;
    let blocked = false;
    const failed: PendingMessage[] = [];
    const outbox = this.state.outbox.map((p) => {
      if (p.status === 'failed') return p;
      const due = p.status === 'queued' || now - (p.lastSentAt ?? 0) >= this.opts.resendAfterMs;
      if (!due) return p;
      if (p.attempts >= this.opts.maxSendAttempts) {
        changed = true;
        const f = { ...p, status: 'failed' as const };
        failed.push(f);
        return f;
      }
      // A room waiting to be joined again holds its messages (they would be refused as not_joined).
      if (p.kind === 'message' && (!this.state.joined[p.room!] || this.retryAt.has(`join:${p.room}`))) return p;
      if (blocked) return p;
      const sent = this.transmit(p);
      if (sent === p) blocked = true;
      else changed = true;
      return sent;
    });
    if (changed) this.set({ outbox });
    for (const f of failed) this.pushError('client_send_failed', `could not deliver: “${f.content.slice(0, 40)}”`);
    if (blocked) this.scheduleDrain();
  }

  // ----- incoming frames ---------------------------------------------------

  private handle(frame: ServerFrame): void {
    switch (frame.type) {
      case 'welcome': {
        if (this.welcomeTimer) clearTimeout(this.welcomeTimer);
        this.welcomeTimer = null;
        this.authFailures = 0;
        const me = { userId: frame.data.userId, username: frame.data.username };
        // A new connection starts with the server's full burst allowance.
        this.tokens = this.opts.rateBurst;
        this.tokensAt = this.opts.now();
        this.pingSentAt = null;
        this.txQueue = [];
        // The rooms list is asked for now (resync), or at the next tick if the joins used the budget.
        this.roomsDueAt = 0;
        this.dmSeenUpTo.clear();
        for (const d of Object.values(this.state.dms)) {
          if (d.historyLoaded) this.dmSeenUpTo.set(d.userId, lastId(d.messages) ?? 0);
        }
        this.set({ status: 'open', me, nextRetryAt: null });
        this.rememberUsers([me]);
        const gen = this.gen;
        this.stableTimer = setTimeout(() => {
          if (gen === this.gen) this.set({ attempt: 0 });
        }, this.opts.stableAfterMs);
        this.scheduleTokenRefresh();
        this.resync();
        return;
      }
      case 'message':
        this.onRoomMessages(frame.data.room, [frame.data], true);
        return;
      case 'room_history': {
        const req = takeAnswered(this.roomHistoryQ.get(frame.room), frame) ?? this.unaskedLatest();
        if (req !== STALE && req.kind === 'before' && !reachesBack(this.state.joined[frame.room]?.messages, req.ref)) {
          this.patchRoom(frame.room, (r) => ({ ...r, loadingOlder: false }));
          return;
        }
        this.onRoomMessages(frame.room, frame.data, false);
        if (req === STALE) return;
        const full = frame.data.length >= req.limit;
        this.patchRoom(frame.room, (r) => {
          if (req.kind === 'after') return r;
          return {
            ...r,
            messages: req.kind === 'latest' && !r.historyLoaded ? withoutHole(r.messages, frame.data, full) : r.messages,
            historyLoaded: true,
            hasMore: req.kind === 'before' || !r.historyLoaded ? full : r.hasMore,
            loadingOlder: req.kind === 'before' ? false : r.loadingOlder,
          };
        });
        if (req.kind === 'after' && full && frame.data.length) {
          this.requestRoomHistory(frame.room, 'after', frame.data[frame.data.length - 1].id);
        }
        return;
      }
      case 'dm':
        this.onDms([frame.data], true);
        return;
      case 'dm_sent':
        this.onDms([frame.data.message], true);
        return;
      case 'dm_history': {
        const peer = frame.with;
        const req = takeAnswered(this.dmHistoryQ.get(peer), frame) ?? this.unaskedLatest();
        if (req !== STALE && req.kind === 'before' && !reachesBack(this.state.dms[peer]?.messages, req.ref)) {
          this.patchDm(peer, (d) => ({ ...d, loadingOlder: false }));
          return;
        }
        const name =
          this.state.users[peer]?.username ??
          frame.data.find((m) => m.fromUser === peer)?.username ??
          `user ${peer}`;
        this.patchDm(peer, (d) => d, name);
        // A catch-up brings what was sent while this client was away: news, like live DMs.
        this.onDms(frame.data, req !== STALE && req.kind === 'after', peer);
        if (req === STALE) return;
        const full = frame.data.length >= req.limit;
        this.patchDm(peer, (d) => {
          if (req.kind === 'after') return d.historyLoaded ? d : { ...d, historyLoaded: true };
          return {
            ...d,
            messages: req.kind === 'latest' && !d.historyLoaded ? withoutHole(d.messages, frame.data, full) : d.messages,
            historyLoaded: true,
            hasMore: req.kind === 'before' || !d.historyLoaded ? full : d.hasMore,
            loadingOlder: req.kind === 'before' ? false : d.loadingOlder,
          };
        });
        if (req.kind !== 'after') this.dmsToOpen.delete(peer);
        if (req.kind === 'after' && full && frame.data.length) {
          this.requestDmHistory(peer, 'after', frame.data[frame.data.length - 1].id);
        } else if (req.kind === 'after') {
          this.dmSeenUpTo.delete(peer); // complete: from here on the newest id is
        }
        return;
      }
      case 'join_ack': {
        this.rememberUsers(frame.data.users);
        const users = dedupeUsers(frame.data.users);
        const online = frame.data.online === undefined ? null : Math.max(users.length, frame.data.online);
        this.patchRoom(frame.room, (r) => ({ ...r, status: 'joined', users, online }));
        // The rooms list counts the room as the server just did (a new room is added to it): no
        // `rooms` request, which the whole room would otherwise send on every join.
        if (this.state.joined[frame.room]) {
          this.set({ rooms: withRoomOnline(this.state.rooms, frame.room, online ?? users.length, true) });
        }
        return;
      }
      case 'left': {
        // leave() forgot the room already. Joined again since (leave, then join before this ack
        // came back): the server has it joined again, and so does this client (its join_ack counts).
        // Else this user is no longer counted there, unless another tab of theirs still is: the
        // list is asked for again once the server's copy (up to ROOMS_LIST_MAX_AGE_MS old) has
        // the leave; a leave is rare, so this costs little.
        const info = this.state.rooms.find((r) => r.name === frame.room);
        if (!this.state.joined[frame.room] && info && typeof info.online === 'number' && info.online > 0) {
          this.set({ rooms: withRoomOnline(this.state.rooms, frame.room, info.online - 1) });
          if (this.opts.roomsRefreshMs > 0) this.roomsDueAt = Math.min(this.roomsDueAt, this.opts.now() + ROOMS_LIST_MAX_AGE_MS);
        }
        return;
      }
      case 'presence':
        this.onPresence(frame.room, frame.data.event, { userId: frame.data.userId, username: frame.data.username });
        return;
      case 'typing': {
        const u = { userId: frame.data.userId, username: frame.data.username };
        if (u.userId === this.state.me?.userId || !this.state.joined[frame.room]) return;
        this.rememberUsers([u]);
        const m = this.typingUntil.get(frame.room) ?? new Map<number, number>();
        m.set(u.userId, this.opts.now() + this.opts.typingTtlMs);
        this.typingUntil.set(frame.room, m);
        this.patchRoom(frame.room, (r) =>
          r.typing.some((x) => x.userId === u.userId) ? r : { ...r, typing: [...r.typing, u] },
        );
        return;
      }
      case 'rooms': {
        this.scheduleRoomsRefresh();
        const rooms = frame.data.filter((r) => r && typeof r.name === 'string');
        const joined = withOnlineCounts(this.state.joined, rooms);
        this.set({ rooms: withListedUsers(rooms, joined), joined });
        return;
      }
      case 'conversations':
        this.conversationsAskedAt = null;
        this.onConversations(frame.data);
        return;
      case 'error':
        this.onServerError(frame.code, frame.message, aboutOf(frame));
        return;
      case 'pong':
        return;
    }
  }

  /**
   * A user's first connection joined a room of ours, or their last one left it: its users, its
   * online count and the rooms list's count change here, locally. Asking the server for the rooms
   * list instead would make every member of the room send a request on every join and leave.
   */
  private onPresence(room: string, event: 'join' | 'leave', u: UserRef): void {
    this.rememberUsers([u]);
    const r = this.state.joined[room];
    if (!r) return;
    const others = r.users.filter((x) => x.userId !== u.userId);
    const listed = others.length !== r.users.length;
    const join = event === 'join';
    // A join counts a user not listed yet. A leave uncounts a listed user, or one a capped list
    // (crowded room) may not show.
    const delta = join ? (listed ? 0 : 1) : listed || (r.online ?? 0) > r.users.length ? -1 : 0;
    const users = join ? [...others, u] : others;
    const next: RoomState = {
      ...r,
      users,
      online: onlineAfter(r, users, delta),
      typing: join ? r.typing : r.typing.filter((x) => x.userId !== u.userId),
    };
    let rooms = this.state.rooms;
    const info = rooms.find((x) => x.name === room);
    if (info && r.status === 'joined') {
      const counted = typeof info.online === 'number' ? info.online : r.users.length;
      rooms = withRoomOnline(rooms, room, Math.max(users.length, counted + delta));
    }
    if (!join) this.typingUntil.get(room)?.delete(u.userId);
    this.set({ joined: { ...this.state.joined, [room]: next }, rooms });
  }

  private onRoomMessages(roomName: string, msgs: RoomMessage[], live: boolean): void {
    this.ack(msgs);
    this.rememberUsers(msgs.map((m) => ({ userId: m.fromUser, username: m.username })));
    const room = this.state.joined[roomName];
    if (!room) return;
    const all = mergeById(room.messages, msgs);
    if (all === room.messages) return;
    const merged = this.readingBackRooms.has(roomName) ? all : capped(room.messages, all, this.opts.maxMessages);
    const senders = new Set(msgs.map((m) => m.fromUser));
    const typers = this.typingUntil.get(roomName);
    for (const s of senders) typers?.delete(s);
    this.patchRoom(roomName, (r) => ({
      ...r,
      messages: merged,
      hasMore: merged !== all || r.hasMore,
      typing: r.typing.some((t) => senders.has(t.userId)) ? r.typing.filter((t) => !senders.has(t.userId)) : r.typing,
    }));
    if (live && this.opts.onMessage) {
      const known = new Set(room.messages.map((m) => m.id));
      for (const m of msgs) if (!known.has(m.id)) this.opts.onMessage(m);
    }
  }

  private onDms(msgs: DirectMessage[], live: boolean, peerHint?: UserId): void {
    this.ack(msgs);
    const me = this.state.me?.userId;
    const byPeer = new Map<number, DirectMessage[]>();
    for (const m of msgs) {
      const peer = peerHint ?? (m.fromUser === me ? m.to : m.fromUser);
      if (m.fromUser !== me) this.rememberUsers([{ userId: m.fromUser, username: m.username }]);
      const arr = byPeer.get(peer) ?? [];
      arr.push(m);
      byPeer.set(peer, arr);
    }
    for (const [peer, arr] of byPeer) {
      const before = this.state.dms[peer]?.messages ?? [];
      const name = this.state.users[peer]?.username ?? `user ${peer}`;
      this.patchDm(peer, (d) => {
        const all = mergeById(d.messages, arr);
        if (all === d.messages && this.state.dms[peer]) return d;
        const merged = this.readingBackDms.has(peer) ? all : capped(d.messages, all, this.opts.maxMessages);
        return { ...d, messages: merged, hasMore: merged !== all || d.hasMore };
      }, name);
      if (live && this.opts.onDm) {
        const known = new Set(before.map((m) => m.id));
        for (const m of arr) if (!known.has(m.id)) this.opts.onDm(m);
      }
    }
  }

  /** Removes from the outbox whatever the server echoed back with our clientId. */
  private ack(msgs: Array<{ clientId?: string; fromUser: UserId }>): void {
    if (!this.state.outbox.length) return;
    const ids = new Set<string>();
    for (const m of msgs) if (m.clientId && (this.state.me === null || m.fromUser === this.state.me.userId)) ids.add(m.clientId);
    if (!ids.size) return;
    const outbox = this.state.outbox.filter((p) => !ids.has(p.clientId));
    if (outbox.length !== this.state.outbox.length) this.set({ outbox });
  }

  /**
   * My DM partners from the server (latest first): each one is listed in `dms`, so that a new
   * device or a reloaded page finds its conversations, also with users who are offline. A loaded
   * conversation that misses newer messages catches up with `dm_history after`; the others are
   * loaded when opened.
   */
  private onConversations(list: ConversationInfo[]): void {
    this.rememberUsers(list.map((c) => ({ userId: c.userId, username: c.username })));
    const dms = { ...this.state.dms };
    for (const c of list) {
      const d = dms[c.userId] ?? newDm(c.userId, c.username);
      dms[c.userId] = { ...d, username: c.username, listedLastId: c.lastId };
    }
    this.set({ dms });
    for (const c of list) {
      const d = this.state.dms[c.userId];
      if (this.missesNewer(d, c.lastId)) this.catchUpDm(d);
    }
  }

  /** A loaded conversation whose newest message (`newest`, per the server) is neither here nor on its way. */
  private missesNewer(d: DmState, newest: MessageId | null): boolean {
    if (!d.historyLoaded || newest === null || newest <= this.caughtUpTo(d)) return false;
    return !this.dmHistoryQ.get(d.userId)?.some((q) => q.kind !== 'before');
  }

  /**
   * A server `error`. Servers with the extension name the request it answers (`about`): then a
   * refused join, history page or outbox entry is handled precisely; older servers name nothing,
   * and the client guesses what it can.
   */
  private onServerError(code: ErrorCode, message: string, about: ErrorAbout): void {
    if (this.onConversationsRefused(code, about)) return;
    switch (about.requestType) {
      case undefined:
        this.guessRefusedJoin(code, message);
        // Unacknowledged frames may have been refused (the error names none): re-send them all sooner.
        if (code === 'rate_limited' || code === 'unavailable') this.resendSoon(code);
        break;
      case 'join':
      case 'join_room':
        this.onJoinRefused(code, about.room);
        break;
      case 'room_history':
        this.onRoomHistoryRefused(code, about.room);
        break;
      case 'dm_history':
        this.onDmHistoryRefused(code, about.with);
        break;
    }
    // A message that only waits for its room to be joined again is no news for the user.
    if (about.clientId !== undefined && this.onSendRefused(code, message, about.clientId)) return;
    this.pushError(code, message, about);
  }

  /**
   * Whether the error refuses our `conversations` request, which is no business of the user: a
   * server without the extension answers unknown_type (older ones naming no request). Every loaded
   * conversation catches up instead; after a passing refusal the list is asked for again later.
   */
  private onConversationsRefused(code: ErrorCode, about: ErrorAbout): boolean {
    if (this.conversationsAskedAt === null) return false;
    const ours = about.requestType === 'conversations' || (about.requestType === undefined && code === 'unknown_type');
    if (!ours) return false;
    this.conversationsAskedAt = null;
    this.catchUpAllDms();
    if (PASSING_CODES.has(code)) this.retryLater('conversations', retryDelay(code));
    return true;
  }

  /** Older servers name no request: a refused join is recognised by its room's name in the message. */
  private guessRefusedJoin(code: ErrorCode, message: string): void {
    if (code !== 'not_found' && code !== 'invalid') return;
    for (const r of Object.values(this.state.joined)) {
      if (r.status === 'joining' && !r.historyLoaded && message.includes(r.name)) this.dropRoom(r.name);
    }
  }

  /**
   * A refused `join`: a room the server will not let us in (unknown, bad name) is forgotten, so
   * that it is not joined again on every reconnection; after a passing refusal (or a replay that
   * failed half-way, which undoes the join) it is joined again later, its messages held meanwhile.
   */
  private onJoinRefused(code: ErrorCode, room: string | undefined): void {
    if (room === undefined || !this.state.joined[room]) return;
    if (code === 'not_found' || code === 'invalid') {
      this.dropRoom(room);
    } else if (PASSING_CODES.has(code)) {
      this.patchRoom(room, (r) => (r.status === 'joining' ? r : { ...r, status: 'joining' }));
      this.retryLater(`join:${room}`, retryDelay(code));
    }
  }

  /** A refused `room_history`: it answers the room's oldest request still waiting (answers come in order). */
  private onRoomHistoryRefused(code: ErrorCode, room: string | undefined): void {
    if (room === undefined) return;
    const req = this.roomHistoryQ.get(room)?.shift();
    if (!req) return;
    if (req.kind === 'before') this.patchRoom(room, (r) => ({ ...r, loadingOlder: false }));
    else if (req.kind === 'latest' && PASSING_CODES.has(code)) this.retryLater(`history:${room}`, retryDelay(code));
  }

  /**
   * A refused `dm_history`: it answers the conversation's oldest request still waiting (answers
   * come in order). After a passing refusal (the database is down) the latest page or the
   * catch-up is asked for again later: messages that came while this client was away would
   * otherwise be missing until the next reconnection.
   */
  private onDmHistoryRefused(code: ErrorCode, peer: UserId | undefined): void {
    if (peer === undefined) return;
    const req = this.dmHistoryQ.get(peer)?.shift();
    if (!req) return;
    if (req.kind === 'before') {
      this.patchDm(peer, (d) => ({ ...d, loadingOlder: false }));
    } else if (PASSING_CODES.has(code)) {
      this.retryLater(`dm:${peer}`, retryDelay(code));
    } else if (req.kind === 'latest') {
      // Refused for good (an unknown user): nothing to load, now or on the next connection.
      this.dmsToOpen.delete(peer);
      this.patchDm(peer, (d) => (d.historyLoaded ? d : { ...d, historyLoaded: true, hasMore: false }));
    }
  }

  /**
   * The server refused the outbox entry `clientId`. After a passing refusal it is re-sent soon; a
   * message refused as not_joined because its room's join failed waits for the room to be joined
   * again (true: that refusal is not worth showing); any other refusal marks it failed, with the
   * reason, and it is not re-sent.
   */
  private onSendRefused(code: ErrorCode, message: string, clientId: string): boolean {
    const p = this.state.outbox.find((x) => x.clientId === clientId);
    if (!p || p.status === 'failed') return false;
    if (PASSING_CODES.has(code)) {
      // An answer, not a delivery lost on the way: a database outage longer than
      // maxSendAttempts refusals must not turn the message into 'failed'.
      if (TRY_LATER_CODES.has(code)) this.patchOutbox(clientId, (x) => ({ ...x, attempts: Math.max(0, x.attempts - 1) }));
      this.resendSoon(code, clientId);
      return false;
    }
    const room = p.kind === 'message' ? this.state.joined[p.room!] : undefined;
    if (code === 'not_joined' && room?.status === 'joining') {
      // Not a delivery attempt: the room was not joined. Sent again right behind the next join.
      this.retryLater(`join:${room.name}`, retryDelay('rate_limited'));
      this.patchOutbox(clientId, (x) => ({ ...x, status: 'queued', attempts: Math.max(0, x.attempts - 1) }));
      return true;
    }
    this.patchOutbox(clientId, (x) => ({ ...x, status: 'failed', error: { code, message } }));
    return false;
  }

  /**
   * Re-sends unacknowledged frames sooner than resendAfterMs (1 s after a rate limit, 3 s after a
   * database hiccup): the one named by `clientId`, or all of them when the error names none.
   */
  private resendSoon(code: ErrorCode, clientId?: string): void {
    const soon = this.opts.now() - this.opts.resendAfterMs + retryDelay(code);
    const outbox = this.state.outbox.map((p) =>
      p.status === 'sent' && (clientId === undefined || p.clientId === clientId) && (p.lastSentAt ?? 0) > soon
        ? { ...p, lastSentAt: soon }
        : p,
    );
    this.set({ outbox });
  }

  private patchOutbox(clientId: string, fn: (p: PendingMessage) => PendingMessage): void {
    this.set({ outbox: this.state.outbox.map((p) => (p.clientId === clientId ? fn(p) : p)) });
  }

  private dropRoom(name: string): void {
    if (!this.state.joined[name]) return;
    const joined = { ...this.state.joined };
    delete joined[name];
    this.roomHistoryQ.delete(name);
    this.retryAt.delete(`join:${name}`);
    this.retryAt.delete(`history:${name}`);
    this.typingUntil.delete(name);
    this.readingBackRooms.delete(name);
    this.set({ joined, outbox: this.state.outbox.filter((p) => !(p.kind === 'message' && p.room === name)) });
  }

  /**
   * The next periodic `rooms` refresh: `roomsRefreshMs` from now plus a random share of it, so that
   * clients that connected together (a server restart) spread their requests over the period.
   */
  private scheduleRoomsRefresh(): void {
    const every = this.opts.roomsRefreshMs;
    const jitter = Math.max(0, this.opts.roomsRefreshJitter);
    this.roomsDueAt = this.opts.now() + Math.round(every * (1 + jitter * this.opts.random()));
  }

  // ----- housekeeping ------------------------------------------------------

  private tick = (): void => {
    const now = this.opts.now();
    // Expire typing indicators.
    for (const [room, m] of this.typingUntil) {
      let changed = false;
      for (const [uid, until] of m) {
        if (until <= now) {
          m.delete(uid);
          changed = true;
        }
      }
      if (changed) this.patchRoom(room, (r) => ({ ...r, typing: r.typing.filter((t) => m.has(t.userId)) }));
    }
    if (this.state.status !== 'open') return;
    // Keepalive: a socket that does not answer a ping is dead (half-open TCP, sleeping laptop).
    // Silence is measured on what arrives only: frames that get no answer (typing) prove nothing.
    // And only an unanswered ping counts, not the time since the last frame: a background tab's
    // timer may fire once a minute, long after the answer came.
    const ping = this.opts.pingIntervalMs;
    if (ping > 0) {
      if (this.pingSentAt !== null && this.lastRxAt >= this.pingSentAt) this.pingSentAt = null;
      if (this.pingSentAt !== null && now - this.pingSentAt > this.opts.pongTimeoutMs) {
        this.abandon(CLOSE_CLIENT_TIMEOUT, 'keepalive timeout');
        return;
      }
      // Queued when over budget (one at a time), not skipped: a backlog must not starve it.
      if (this.pingSentAt === null && now - this.lastRxAt >= ping && this.send({ type: 'ping' })) this.pingSentAt = now;
    }
    if (this.opts.roomsRefreshMs > 0 && now >= this.roomsDueAt) this.refreshRooms();
    this.runDueRetries(now);
    if (this.conversationsAskedAt !== null && now - this.conversationsAskedAt > this.opts.historyTimeoutMs) {
      this.conversationsAskedAt = null;
      this.catchUpAllDms();
    }
    // Forget history requests that were never answered (e.g. refused with an error).
    for (const [room, q] of this.roomHistoryQ) {
      while (q.length && now - q[0].at > this.opts.historyTimeoutMs) {
        const req = q.shift()!;
        if (req.kind === 'before') this.patchRoom(room, (r) => ({ ...r, loadingOlder: false }));
      }
    }
    for (const [peer, q] of this.dmHistoryQ) {
      while (q.length && now - q[0].at > this.opts.historyTimeoutMs) {
        const req = q.shift()!;
        if (req.kind === 'before') this.patchDm(peer, (d) => ({ ...d, loadingOlder: false }));
      }
    }
    // Re-send what was not acknowledged (same clientId, so never stored twice).
    this.pump();
  };

  // ----- public actions ----------------------------------------------------

  /** Joins a room (created by the server on first join). Returns false if the name is invalid. */
  join = (room: string): boolean => {
    if (!isValidRoomName(room)) {
      this.pushError('client_invalid', `invalid room name “${room}”: 1–64 letters, digits, “-”, “_” or “.”`);
      return false;
    }
    if (this.state.joined[room]) return true;
    this.set({ joined: { ...this.state.joined, [room]: newRoom(room) } });
    this.sendJoin(this.state.joined[room]);
    return true;
  };

  leave = (room: string): void => {
    if (!this.state.joined[room]) return;
    this.send({ type: 'leave', room });
    this.dropRoom(room);
  };

  /** Queues a room message; returns its clientId, or null if it was refused locally. */
  sendMessage = (room: string, content: string): string | null => {
    const problem = contentProblem(content);
    if (problem) {
      this.pushError('client_invalid', problem);
      return null;
    }
    if (!this.state.joined[room]) {
      this.pushError('not_joined', `join #${room} before writing to it`);
      return null;
    }
    // Receivers clear my typing indicator when my message arrives: the next keystroke may show it
    // again, but not sooner than 1 s after sending (a fast sender would double its frame rate).
    this.typingSentAt.set(room, this.opts.now() - this.opts.typingThrottleMs + 1000);
    return this.enqueue({ kind: 'message', room, content });
  };

  /** Queues a direct message; returns its clientId, or null if it was refused locally. */
  sendDm = (to: UserId, content: string): string | null => {
    const problem = contentProblem(content);
    if (problem) {
      this.pushError('client_invalid', problem);
      return null;
    }
    if (!Number.isInteger(to)) {
      this.pushError('client_invalid', 'invalid recipient');
      return null;
    }
    if (!this.state.dms[to]) this.patchDm(to, (d) => d, this.state.users[to]?.username ?? `user ${to}`);
    return this.enqueue({ kind: 'dm', to, content });
  };

  private enqueue(p: Pick<PendingMessage, 'kind' | 'room' | 'to' | 'content'>): string {
    const clientId = this.opts.generateClientId().slice(0, MAX_CLIENT_ID_LENGTH);
    const item: PendingMessage = {
      ...p,
      clientId,
      createdAt: this.opts.now(),
      attempts: 0,
      lastSentAt: null,
      status: 'queued',
    };
    // Frames are handled in order by the server, so a message right behind its room's `join`
    // (even before join_ack) is fine.
    this.set({ outbox: [...this.state.outbox, item] });
    this.pump();
    return clientId;
  };

  /** Loads the page of room messages just before the oldest one loaded. */
  loadOlder = (room: string): void => {
    const r = this.state.joined[room];
    if (!r || !r.hasMore || r.loadingOlder || !r.historyLoaded) return;
    const oldest = r.messages[0]?.id;
    if (oldest === undefined) return;
    if (this.state.status !== 'open') return;
    this.requestRoomHistory(room, 'before', oldest);
    this.patchRoom(room, (x) => ({ ...x, loadingOlder: true }));
  };

  /**
   * The reader of a room is back in its history, away from the newest messages (true), or back at
   * them (false). Meanwhile new messages drop nothing (`maxMessages`): the messages being read stay
   * where they are. Back at the newest, the oldest beyond `maxMessages` are dropped (`hasMore`).
   */
  setReadingBack = (room: string, readingBack: boolean): void => {
    if (readingBack) {
      if (this.state.joined[room]) this.readingBackRooms.add(room);
      return;
    }
    this.readingBackRooms.delete(room);
    this.patchRoom(room, (r) => this.backAtNewest(r));
  };

  /** `setReadingBack` for the conversation with a user. */
  setReadingBackDm = (userId: UserId, readingBack: boolean): void => {
    if (readingBack) {
      if (this.state.dms[userId]) this.readingBackDms.add(userId);
      return;
    }
    this.readingBackDms.delete(userId);
    this.patchDm(userId, (d) => this.backAtNewest(d));
  };

  /**
   * A room or conversation whose reader is back at its newest messages: without its oldest messages
   * beyond `maxMessages` (`hasMore`: they can be loaded again); `c` itself when it is short enough.
   */
  private backAtNewest<C extends RoomState | DmState>(c: C): C {
    const messages = trimmed<RoomMessage | DirectMessage>(c.messages, this.opts.maxMessages);
    return messages === c.messages ? c : { ...c, messages, hasMore: true };
  }

  /** Opens (creates) the conversation with a user and loads its latest page once. */
  openDm = (userId: UserId, username?: string): void => {
    this.addDm(userId, username);
    const d = this.state.dms[userId];
    if (!d || d.historyLoaded || this.dmHistoryQ.get(userId)?.some((q) => q.kind === 'latest')) return;
    // Remembered until the page arrives: a connection that drops first loads it on the next one.
    this.dmsToOpen.add(userId);
    this.requestDmHistory(userId, 'latest');
  };

  /** Lists the conversation with a user in `dms` without loading it (e.g. one remembered from an earlier visit); `openDm` loads it. */
  addDm = (userId: UserId, username?: string): void => {
    if (!Number.isInteger(userId)) return;
    if (username) this.rememberUsers([{ userId, username }]);
    this.patchDm(userId, (d) => d, username ?? this.state.users[userId]?.username ?? `user ${userId}`);
  };

  loadOlderDms = (userId: UserId): void => {
    const d = this.state.dms[userId];
    if (!d || !d.hasMore || d.loadingOlder || !d.historyLoaded) return;
    const oldest = d.messages[0]?.id;
    if (oldest === undefined) return;
    if (this.requestDmHistory(userId, 'before', oldest)) this.patchDm(userId, (x) => ({ ...x, loadingOlder: true }));
  };

  /** Tells the room I am typing; throttled to one frame per `typingThrottleMs` per room. */
  typing = (room: string): void => {
    if (this.state.joined[room]?.status !== 'joined') return;
    const now = this.opts.now();
    const last = this.typingSentAt.get(room);
    if (last !== undefined && now - last < this.opts.typingThrottleMs) return;
    if (this.send({ type: 'typing', room }, true)) this.typingSentAt.set(room, now);
  };

  /** Asks for the rooms list now (skipped when over the send budget); the periodic refresh starts over. */
  refreshRooms = (): void => {
    if (this.send({ type: 'rooms' }, true)) this.scheduleRoomsRefresh();
  };

  /** Tries a 'failed' outbox entry again (same clientId); see `isRetryable`. */
  retry = (clientId: string): void => {
    const outbox = this.state.outbox.map((p) =>
      p.clientId === clientId && p.status === 'failed' ? { ...p, status: 'queued' as const, attempts: 0, error: undefined } : p,
    );
    this.set({ outbox });
    this.pump();
  };

  /** Forgets an outbox entry (it may still have been stored if it was sent). */
  discard = (clientId: string): void => {
    this.set({ outbox: this.state.outbox.filter((p) => p.clientId !== clientId) });
  };

  dismissError = (id: number): void => {
    this.set({ errors: this.state.errors.filter((e) => e.id !== id) });
  };
}

function detach(ws: WebSocketLike): void {
  ws.onopen = ws.onmessage = ws.onerror = null;
  ws.onclose = null;
}
