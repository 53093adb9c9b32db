/**
 * The client's options with their defaults filled in (`resolveOptions`), and the two defaults that
 * are functions: a random clientId and the expiry read from a JWT.
 */
import { HISTORY_PAGE_MAX } from './protocol';
import type { ChatClientOptions } from './state';

/** Options whose default is "none". */
type Optional = 'initialRooms' | 'initialOutbox' | 'WebSocket' | 'backoff' | 'onError' | 'onMessage' | 'onDm' | 'onMembership';

export type ResolvedOptions = Required<Omit<ChatClientOptions, Optional>> & Pick<ChatClientOptions, Optional>;

/** A random RFC 4122 version 4 UUID. */
export function defaultClientId(): string {
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

/** `options` with every default filled in (documented in state.ts), page size and message cap within bounds. */
export function resolveOptions(options: ChatClientOptions): ResolvedOptions {
  const opts: ResolvedOptions = {
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
    defaultRooms: [],
    historyTimeoutMs: 15_000,
    tickMs: 1_000,
    maxErrors: 5,
    random: Math.random,
    generateClientId: defaultClientId,
    now: Date.now,
    ...options,
  };
  opts.historyPageSize = Math.max(1, Math.min(HISTORY_PAGE_MAX, Math.floor(opts.historyPageSize)));
  opts.maxMessages = Math.max(opts.historyPageSize, Math.floor(opts.maxMessages));
  return opts;
}
