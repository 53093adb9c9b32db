/**
 * The outbox: messages written but not acknowledged yet (`state.outbox`). It puts them on the
 * socket in order within the send budget, sends again what got no echo (same clientId: the server
 * never stores one twice), gives up after `maxSendAttempts`, handles the server's refusals of an
 * entry, and keeps a tab's unsent messages in sessionStorage across a reload (`loadUnsent`).
 */
import { parseKey } from './conversation';
import { MAX_CLIENT_ID_LENGTH, type ClientFrame, type ErrorCode } from './protocol';
import type { ResolvedOptions } from './options';
import { PASSING_CODES, retryDelay, type Retries } from './retries';
import type { SendQueue } from './sendQueue';
import type { Store } from './store';
import type { ChatState, ConversationKey, PendingMessage, RoomState } from './state';

/** The server's "not now, try again later": a message refused so was not lost on its way, and is not given up on. */
const TRY_LATER_CODES: ReadonlySet<string> = new Set(['rate_limited', 'unavailable']);
/** Refusals of a message that sending it again cannot change (its content or recipient is wrong). */
const FINAL_CODES: ReadonlySet<string> = new Set(['invalid', 'too_large', 'not_found', 'bad_json', 'unknown_type']);

/** Whether trying a failed outbox entry again makes sense: not when the server refused its content or recipient. */
export function isRetryable(p: PendingMessage): boolean {
  return !p.error || !FINAL_CODES.has(p.error.code);
}

/**
 * The outbox a client starts with (`initialOutbox`): room messages of rooms it is in and DMs to a
 * valid user, to be sent again (none is in flight on a client that has not connected yet).
 */
export function startingOutbox(entries: PendingMessage[], joined: Record<string, RoomState>): PendingMessage[] {
  return entries
    .filter((p) => (p.kind === 'message' ? !!joined[p.room!] : Number.isInteger(p.to)))
    .map((p) => (p.status === 'sent' ? { ...p, status: 'queued' as const } : { ...p }));
}

export class Outbox {
  constructor(
    private readonly opts: Pick<ResolvedOptions, 'now' | 'generateClientId' | 'resendAfterMs' | 'maxSendAttempts'>,
    private readonly store: Store,
    private readonly queue: SendQueue,
    private readonly retries: Retries,
  ) {}

  /** Queues `content` for the conversation `key` and sends it as soon as it may; returns its clientId. */
  enqueue(key: ConversationKey, content: string): string {
    const ref = parseKey(key)!;
    const clientId = this.opts.generateClientId().slice(0, MAX_CLIENT_ID_LENGTH);
    const item: PendingMessage = {
      ...(ref.kind === 'room' ? { kind: 'message', room: ref.room } : { kind: 'dm', to: ref.userId }),
      content,
      clientId,
      createdAt: this.opts.now(),
      attempts: 0,
      lastSentAt: null,
      status: 'queued',
    };
    // Frames are handled in order by the server, so a message right behind its room's `join`
    // (even before join_ack) is fine.
    this.store.set({ outbox: [...this.store.state.outbox, item] });
    this.pump();
    return clientId;
  }

  /**
   * Puts outbox entries on the socket, oldest first, within the send budget: new ones, ones to
   * re-send after a reconnection, and ones whose echo did not come within resendAfterMs.
   * Order is kept: once an entry has to wait, the entries behind it wait too.
   */
  pump(): void {
    const state = this.store.state;
    if (state.status !== 'open') return;
    const now = this.opts.now();
    let changed = false;
    let blocked = false;
    const failed: PendingMessage[] = [];
    const outbox = state.outbox.map((p) => {
      if (p.status === 'failed') return p;
      const due = p.status === 'queued' || now - (p.lastSentAt ?? 0) >= this.opts.resendAfterMs;
      if (!due) return p;
      if (p.attempts >= this.opts.maxSendAttempts) {
        changed = true;
        const f = { ...p, status: 'failed' as const };
        failed.push(f);
        return f;
      }
      if (this.isHeld(state, p) || blocked) return p;
      const sent = this.transmit(p);
      if (sent === p) blocked = true;
      else changed = true;
      return sent;
    });
    if (changed) this.store.set({ outbox });
    for (const f of failed) this.store.pushError('client_send_failed', `could not deliver: “${f.content.slice(0, 40)}”`);
    if (blocked) this.queue.scheduleDrain();
  }

  /**
   * The server refused the entry `clientId`. After a passing refusal it is re-sent soon; a message
   * refused as not_joined because its room's join failed waits for the room to be joined again
   * (true: that refusal is not worth showing); any other refusal marks it failed, with the reason,
   * and it is not re-sent.
   */
  refused(code: ErrorCode, message: string, clientId: string): boolean {
    const p = this.store.state.outbox.find((x) => x.clientId === clientId);
    if (!p || p.status === 'failed') return false;
    if (PASSING_CODES.has(code)) {
      // An answer, not a delivery lost on the way: a database outage longer than
      // maxSendAttempts refusals must not turn the message into 'failed'.
      if (TRY_LATER_CODES.has(code)) this.patch(clientId, (x) => ({ ...x, attempts: Math.max(0, x.attempts - 1) }));
      this.resendSoon(code, clientId);
      return false;
    }
    const room = p.kind === 'message' ? this.store.state.joined[p.room!] : undefined;
    if (code === 'not_joined' && room?.status === 'joining') {
      // Not a delivery attempt: the room was not joined. Sent again right behind the next join.
      this.retries.later(`join:${room.name}`, retryDelay('rate_limited'));
      this.patch(clientId, (x) => ({ ...x, status: 'queued', attempts: Math.max(0, x.attempts - 1) }));
      return true;
    }
    this.patch(clientId, (x) => ({ ...x, status: 'failed', error: { code, message } }));
    return false;
  }

  /**
   * Re-sends unacknowledged frames sooner than resendAfterMs (1 s after a rate limit, 3 s after a
   * database hiccup): the one named by `clientId`, or all of them when the error names none.
   */
  resendSoon(code: ErrorCode, clientId?: string): void {
    const soon = this.opts.now() - this.opts.resendAfterMs + retryDelay(code);
    const outbox = this.store.state.outbox.map((p) =>
      p.status === 'sent' && (clientId === undefined || p.clientId === clientId) && (p.lastSentAt ?? 0) > soon
        ? { ...p, lastSentAt: soon }
        : p,
    );
    this.store.set({ outbox });
  }

  /** Tries a 'failed' entry again (same clientId); see `isRetryable`. */
  retry = (clientId: string): void => {
    const outbox = this.store.state.outbox.map((p) =>
      p.clientId === clientId && p.status === 'failed' ? { ...p, status: 'queued' as const, attempts: 0, error: undefined } : p,
    );
    this.store.set({ outbox });
    this.pump();
  };

  /** Forgets an entry (it may still have been stored if it was sent). */
  discard = (clientId: string): void => {
    this.store.set({ outbox: this.store.state.outbox.filter((p) => p.clientId !== clientId) });
  };

  /** A room waiting to be joined (again) holds its messages: they would be refused as not_joined. */
  private isHeld(state: ChatState, p: PendingMessage): boolean {
    return p.kind === 'message' && (!state.joined[p.room!] || this.retries.has(`join:${p.room}`));
  }

  private transmit(p: PendingMessage): PendingMessage {
    const frame: ClientFrame =
      p.kind === 'message'
        ? { type: 'message', room: p.room!, content: p.content, clientId: p.clientId }
        : { type: 'dm', to: p.to!, content: p.content, clientId: p.clientId };
    if (!this.queue.trySendNow(frame)) return p;
    return { ...p, status: 'sent', attempts: p.attempts + 1, lastSentAt: this.opts.now() };
  }

  private patch(clientId: string, fn: (p: PendingMessage) => PendingMessage): void {
    this.store.set({ outbox: this.store.state.outbox.map((p) => (p.clientId === clientId ? fn(p) : p)) });
  }
}

// ----- kept per tab across a reload ------------------------------------------

/** Where a tab keeps its unsent messages; sessionStorage by default. */
export type UnsentStorage = Pick<Storage, 'getItem' | 'setItem' | 'removeItem'>;

const unsentKey = (userId: number) => `chat.outbox.${userId}`;

/** sessionStorage, if there is one (reading it throws where storage is disabled: callers catch that). */
function tabStorage(): UnsentStorage | undefined {
  return (globalThis as { sessionStorage?: UnsentStorage }).sessionStorage;
}

/**
 * The messages this tab had not got delivered (`saveUnsent`), e.g. before a reload or a crash of
 * the tab while offline: handed to the next client as `initialOutbox`, they are sent instead of
 * lost. Per tab (sessionStorage), not localStorage: two tabs would overwrite each other's. Their
 * clientIds make a message sent twice stored once.
 */
export function loadUnsent(userId: number, storage?: UnsentStorage): PendingMessage[] {
  try {
    const raw = (storage ?? tabStorage())?.getItem(unsentKey(userId));
    const list: unknown = raw ? JSON.parse(raw) : [];
    return Array.isArray(list) ? list.filter(isPending) : [];
  } catch {
    return [];
  }
}

/** Keeps `outbox` for `loadUnsent` (an empty one forgets it). */
export function saveUnsent(userId: number, outbox: PendingMessage[], storage?: UnsentStorage): void {
  try {
    const s = storage ?? tabStorage();
    if (outbox.length) s?.setItem(unsentKey(userId), JSON.stringify(outbox));
    else s?.removeItem(unsentKey(userId));
  } catch {
    /* full or unavailable: they stay in memory */
  }
}

function isPending(p: unknown): p is PendingMessage {
  const m = p as Partial<PendingMessage> | null;
  return (
    typeof m === 'object' &&
    m !== null &&
    typeof m.clientId === 'string' &&
    typeof m.content === 'string' &&
    typeof m.createdAt === 'number' &&
    typeof m.attempts === 'number' &&
    (m.status === 'queued' || m.status === 'sent' || m.status === 'failed') &&
    ((m.kind === 'message' && typeof m.room === 'string') || (m.kind === 'dm' && typeof m.to === 'number'))
  );
}
