/**
 * History requests, by conversation key (`r:<room>` | `d:<userId>`): the latest page, older pages
 * (`loadOlder`), DM catch-ups after a reconnection (`after` the last id seen, paging until
 * complete, with the edits, deletes and reactions since; live ones held until then), the `conversations` list that says which conversations have news; which request an
 * answer is for, requests that time out, and requests refused for a passing reason asked again.
 */
import { conversationOf, dmKey, parseKey, roomKey, withConversation, withDm } from './conversation';
import { dmPeerOfEvent, reduceMessageEvent } from './eventReducers';
import { lastId, reachesBack } from './messageLists';
import type { ResolvedOptions } from './options';
import type {
  ClientFrame,
  ConversationsFrame,
  DirectMessage,
  DmHistoryFrame,
  ErrorAbout,
  ErrorCode,
  MessageEventFrame,
  MessageId,
  RoomHistoryFrame,
  RoomMessage,
  UserId,
} from './protocol';
import {
  reduceConversations,
  reduceDmHistory,
  reduceRoomHistory,
  STALE,
  type AnsweredRequest,
  type HistoryRequest,
  type ReduceEnv,
} from './reducers';
import { PASSING_CODES, retryDelay, type Retries } from './retries';
import type { Store } from './store';
import type { Conversation, ConversationKey, DmState } from './state';

export interface HistoryDeps {
  /** sends within the send budget; false when not connected */
  send(frame: ClientFrame): boolean;
  /** what the reducers need besides the snapshot */
  env(): ReduceEnv;
  /** messages that came with a DM catch-up: news, like live ones (`onDm`) */
  announce(key: ConversationKey, before: Conversation | undefined, msgs: DirectMessage[]): void;
}

/**
 * Takes the waiting request a history answer is for out of `q`. A server that echoes the page
 * asked for (`limit`, `before` / `after`: this one does) names it, so that an answer arriving
 * after its request was given up on (`historyTimeoutMs`) is not taken for the next request, whose
 * `hasMore` it would set from the wrong page: such an answer is STALE. Without the echo, answers
 * come in order: the oldest request. undefined: nothing was asked (a server sending on its own).
 */
export function takeAnswered(
  q: HistoryRequest[] | undefined,
  echo: { limit?: unknown; before?: unknown; after?: unknown },
): AnsweredRequest | undefined {
  if (typeof echo.limit !== 'number') return q?.shift();
  const kind = typeof echo.before === 'number' ? 'before' : typeof echo.after === 'number' ? 'after' : 'latest';
  const ref = kind === 'before' ? echo.before : kind === 'after' ? echo.after : undefined;
  // Not by `limit`: the server caps it at its own maximum, which may be below the one asked for.
  const i = q ? q.findIndex((r) => r.kind === kind && r.ref === ref) : -1;
  return i < 0 ? STALE : q!.splice(i, 1)[0];
}

export class History {
  /** requests waiting for their answer, per conversation, in sending order */
  private readonly waiting = new Map<ConversationKey, HistoryRequest[]>();
  /** conversations opened (`open`) whose latest page has not arrived yet: loaded on the next connection */
  private readonly toOpen = new Set<UserId>();
  /**
   * Per loaded conversation, its newest id when this connection said `welcome`, until its
   * catch-up is complete. DMs arrive live from `welcome` on, before the catch-up is asked for (it
   * waits for the `conversations` answer): it starts from here, not from a live message that
   * would skip everything sent while this client was away.
   */
  private readonly seenUpTo = new Map<UserId, MessageId>();
  /**
   * DM conversations whose catch-up is under way on this connection, with the live events
   * (edits, deletes, reactions) that came meanwhile. Those wait for the catch-up's `events`: a
   * newer live event applied first would make the older caught-up ones look seen already.
   */
  private readonly catching = new Map<UserId, MessageEventFrame[]>();
  /** when the `conversations` request waiting for its answer on this connection was sent (epoch ms) */
  private conversationsAskedAt: number | null = null;

  constructor(
    private readonly opts: Pick<ResolvedOptions, 'now' | 'historyPageSize' | 'historyTimeoutMs'>,
    private readonly store: Store,
    private readonly retries: Retries,
    private readonly deps: HistoryDeps,
  ) {}

  // ----- asking -------------------------------------------------------------

  /** Asks for a page of `key`: the latest, the one `before` an id, or the one `after` it. False when not connected. */
  request(key: ConversationKey, kind: HistoryRequest['kind'], ref?: MessageId): boolean {
    const conv = parseKey(key)!;
    const limit = this.opts.historyPageSize;
    const frame: ClientFrame =
      conv.kind === 'room' ? { type: 'room_history', room: conv.room, limit } : { type: 'dm_history', with: conv.userId, limit };
    if (kind === 'before' && ref !== undefined) frame.before = ref;
    if (kind === 'after' && ref !== undefined) frame.after = ref;
    if (!this.deps.send(frame)) return false;
    const q = this.waiting.get(key) ?? [];
    q.push({ kind, limit, ref: kind === 'latest' ? undefined : ref, at: this.opts.now() });
    this.waiting.set(key, q);
    return true;
  }

  /** Asks for the latest page of `key` unless it is already on its way. */
  requestLatestOnce(key: ConversationKey): void {
    if (!this.isWaiting(key, (k) => k === 'latest')) this.request(key, 'latest');
  }

  /** Loads the page just before the oldest message loaded (once the latest page is there). */
  loadOlder = (key: ConversationKey): void => {
    const c = conversationOf(this.store.state, key);
    if (!c || !c.hasMore || c.loadingOlder || !c.historyLoaded) return;
    const oldest = c.messages[0]?.id;
    if (oldest === undefined) return;
    if (this.request(key, 'before', oldest)) this.store.update((s) => withConversation(s, key, (x) => ({ ...x, loadingOlder: true })));
  };

  /** Loads the latest page of the conversation with `userId` once (remembered until it arrives). */
  open(userId: UserId): void {
    const d = this.store.state.dms[userId];
    if (!d || d.historyLoaded || this.isWaiting(dmKey(userId), (k) => k === 'latest')) return;
    // Remembered until the page arrives: a connection that drops first loads it on the next one.
    this.toOpen.add(userId);
    this.request(dmKey(userId), 'latest');
  }

  /**
   * On a new connection: an unloaded conversation gets its latest page if it was opened or has
   * messages (seen live); one that is only listed (`conversations`, `addDm`) is loaded when opened.
   */
  loadIfOpened(dm: DmState): void {
    if (!dm.historyLoaded && (dm.messages.length || this.toOpen.has(dm.userId))) this.request(dmKey(dm.userId), 'latest');
  }

  /** Asks for my DM partners (an extension: a server without it answers unknown_type, which is ignored). */
  requestConversations(): void {
    if (this.deps.send({ type: 'conversations' })) this.conversationsAskedAt = this.opts.now();
  }

  /** Catches up every loaded conversation, for want of a `conversations` list naming those with news. */
  catchUpAll(): void {
    for (const d of Object.values(this.store.state.dms)) if (this.missesNewer(d, Number.POSITIVE_INFINITY)) this.catchUp(d);
  }

  /** Sends again a request refused for a passing reason: a latest page, or a DM catch-up. */
  resume(key: ConversationKey): void {
    const c = conversationOf(this.store.state, key);
    if (!c || this.isWaiting(key, (k) => k !== 'before')) return;
    if (!c.historyLoaded) this.request(key, 'latest');
    // A room catches up with its join's `since`.
    else if ('userId' in c) this.catchUp(c);
  }

  // ----- connection events -----------------------------------------------------

  /** A new connection: each loaded conversation is complete up to its newest id (caught up from there). */
  onWelcome(): void {
    const unfinished = new Map<UserId, MessageId>();
    // A catch-up the last connection did not finish starts again where it started: live DMs since
    // are not the end of what is known.
    for (const u of this.catching.keys()) if (this.seenUpTo.has(u)) unfinished.set(u, this.seenUpTo.get(u)!);
    this.seenUpTo.clear();
    this.catching.clear();
    for (const d of Object.values(this.store.state.dms)) {
      if (d.historyLoaded) this.seenUpTo.set(d.userId, unfinished.get(d.userId) ?? newestSeen(d));
    }
  }

  /** The connection went away: no answer will come to what was asked on it. */
  reset(): void {
    this.waiting.clear();
    this.conversationsAskedAt = null;
    // The held events are dropped: above the conversation's cursor, the next catch-up brings them again.
    for (const u of this.catching.keys()) this.catching.set(u, []);
  }

  /**
   * Whether a live event is held (true) until the catch-up of its DM conversation is done: it is
   * applied then, after the events the catch-up brings.
   */
  holds(frame: MessageEventFrame): boolean {
    const peer = dmPeerOfEvent(this.store.state, frame);
    const held = peer === undefined ? undefined : this.catching.get(peer);
    if (!held) return false;
    held.push(frame);
    return true;
  }

  /** A room was left or refused: its requests are forgotten. */
  forget(key: ConversationKey): void {
    this.waiting.delete(key);
    this.retries.delete(`history:${key}`);
  }

  /** Forgets requests never answered (e.g. refused with an error) after `historyTimeoutMs`. */
  expire(now: number): void {
    if (this.conversationsAskedAt !== null && now - this.conversationsAskedAt > this.opts.historyTimeoutMs) {
      this.conversationsAskedAt = null;
      this.catchUpAll();
    }
    for (const [key, q] of this.waiting) {
      while (q.length && now - q[0].at > this.opts.historyTimeoutMs) {
        const req = q.shift()!;
        if (req.kind === 'before') this.store.update((s) => withConversation(s, key, (c) => ({ ...c, loadingOlder: false })));
        // (given up on: what it held is applied rather than held for good)
        else if (req.kind === 'after' && !this.isWaiting(key, (k) => k === 'after')) this.endCatchUp(key);
      }
    }
  }

  // ----- answers ----------------------------------------------------------------

  onRoomHistory(frame: RoomHistoryFrame): void {
    const key = roomKey(frame.room);
    const req = this.answered(key, frame);
    const merged = this.pageJoins(key, req);
    this.store.update((s) => reduceRoomHistory(s, frame, this.deps.env(), req));
    if (merged && req.kind !== 'stale') this.followUp(key, req, frame.data);
  }

  onDmHistory(frame: DmHistoryFrame): void {
    const key = dmKey(frame.with);
    const req = this.answered(key, frame);
    const merged = this.pageJoins(key, req);
    const before = this.store.state.dms[frame.with];
    this.store.update((s) => reduceDmHistory(s, frame, this.deps.env(), req));
    // What changed since, on messages had before (the page's own are as they are now): in id order.
    for (const event of merged ? (frame.events ?? []) : []) this.store.update((s) => reduceMessageEvent(s, event));
    if (!merged || req.kind === 'stale') return;
    // A catch-up brings what was sent while this client was away: news, like live DMs.
    if (req.kind === 'after') this.deps.announce(key, before, frame.data);
    if (req.kind !== 'after') this.toOpen.delete(frame.with);
    this.followUp(key, req, frame.data, frame);
  }

  /**
   * My DM partners (latest first), listed in `dms`. A loaded conversation that misses newer
   * messages catches up with `dm_history after`; the others are loaded when opened.
   */
  onConversations(frame: ConversationsFrame): void {
    this.conversationsAskedAt = null;
    this.store.update((s) => reduceConversations(s, frame));
    for (const c of frame.data) {
      const d = this.store.state.dms[c.userId];
      if (this.missesNewer(d, c.lastId)) this.catchUp(d);
    }
  }

  /**
   * Whether the error refuses our `conversations` request, which is no business of the user: a
   * server without the extension answers unknown_type (older ones naming no request). Every loaded
   * conversation catches up instead; after a passing refusal the list is asked for again later.
   */
  conversationsRefused(code: ErrorCode, about: ErrorAbout): boolean {
    if (this.conversationsAskedAt === null) return false;
    const ours = about.requestType === 'conversations' || (about.requestType === undefined && code === 'unknown_type');
    if (!ours) return false;
    this.conversationsAskedAt = null;
    this.catchUpAll();
    if (PASSING_CODES.has(code)) this.retries.later('conversations', retryDelay(code));
    return true;
  }

  /**
   * A refused history request: it answers the conversation's oldest request still waiting
   * (answers come in order). After a passing refusal (the database is down) the latest page or
   * the catch-up is asked for again later: messages that came while this client was away would
   * otherwise be missing until the next reconnection.
   */
  refused(key: ConversationKey, code: ErrorCode): void {
    const req = this.waiting.get(key)?.shift();
    if (!req) return;
    const ref = parseKey(key)!;
    if (req.kind === 'before') {
      this.store.update((s) => withConversation(s, key, (c) => ({ ...c, loadingOlder: false })));
    } else if (PASSING_CODES.has(code)) {
      this.retries.later(`history:${key}`, retryDelay(code)); // (a catch-up's live events stay held)
    } else if (req.kind === 'after') {
      this.endCatchUp(key);
    } else if (req.kind === 'latest' && ref.kind === 'dm') {
      // Refused for good (an unknown user): nothing to load, now or on the next connection. (A
      // room's latest page is asked for again with its next join.)
      this.toOpen.delete(ref.userId);
      this.store.update((s) => withDm(s, ref.userId, (d) => (d.historyLoaded ? d : { ...d, historyLoaded: true, hasMore: false })));
    }
  }

  // ----- helpers ----------------------------------------------------------------

  private isWaiting(key: ConversationKey, kind: (k: HistoryRequest['kind']) => boolean): boolean {
    return !!this.waiting.get(key)?.some((q) => kind(q.kind));
  }

  /** The request an answer is for; one nobody asked for is taken as the latest page. */
  private answered(key: ConversationKey, echo: { limit?: unknown; before?: unknown; after?: unknown }): AnsweredRequest {
    return takeAnswered(this.waiting.get(key), echo) ?? { kind: 'latest', limit: this.opts.historyPageSize, at: 0 };
  }

  /** Whether a page is merged: not an older page that no longer joins the messages (see reducers.ts). */
  private pageJoins(key: ConversationKey, req: AnsweredRequest): boolean {
    return req === STALE || req.kind !== 'before' || reachesBack<RoomMessage | DirectMessage>(conversationOf(this.store.state, key)?.messages, req.ref);
  }

  /**
   * A full catch-up page is followed by the next one (after its last eventId when the server cut
   * its events, `more`); a DM catch-up that is complete is complete up to the newest id.
   */
  private followUp(key: ConversationKey, req: HistoryRequest, page: Array<{ id: MessageId }>, frame?: DmHistoryFrame): void {
    if (req.kind !== 'after') return;
    const events = frame?.events ?? [];
    if (frame?.more && events.length) {
      this.request(key, 'after', events[events.length - 1].eventId);
    } else if (page.length >= req.limit && page.length) {
      this.request(key, 'after', page[page.length - 1].id);
    } else {
      const ref = parseKey(key)!;
      if (ref.kind === 'dm') this.seenUpTo.delete(ref.userId); // complete: from here on the newest id is
      this.endCatchUp(key);
    }
  }

  /** Catches up a loaded conversation after the last id seen before this connection (0 if it was empty): pages follow until done. */
  private catchUp(dm: DmState): void {
    if (!this.catching.has(dm.userId)) this.catching.set(dm.userId, []);
    if (!this.request(dmKey(dm.userId), 'after', this.caughtUpTo(dm))) this.catching.delete(dm.userId);
  }

  /** The catch-up of a DM conversation is over: the live events held meanwhile are applied, in order. */
  private endCatchUp(key: ConversationKey): void {
    const ref = parseKey(key);
    if (ref?.kind !== 'dm') return;
    const held = this.catching.get(ref.userId);
    this.catching.delete(ref.userId);
    for (const event of held ?? []) this.store.update((s) => reduceMessageEvent(s, event));
  }

  /** The id up to which a loaded conversation is known to be complete: its last message or event seen. */
  private caughtUpTo(dm: DmState): MessageId {
    return this.seenUpTo.get(dm.userId) ?? newestSeen(dm);
  }

  /** A loaded conversation whose newest message (`newest`, per the server) is neither here nor on its way. */
  private missesNewer(d: DmState, newest: MessageId | null): boolean {
    if (!d.historyLoaded || newest === null || newest <= this.caughtUpTo(d)) return false;
    return !this.isWaiting(dmKey(d.userId), (k) => k !== 'before');
  }
}

/** The newest id of a conversation seen here: its last message, or a later event (0: nothing). */
function newestSeen(dm: DmState): MessageId {
  return Math.max(lastId(dm.messages) ?? 0, dm.lastEventId ?? 0);
}
