/**
 * Room membership: joining (again on every connection, with `since` once loaded), leaving, rooms
 * refused by the server, typing (sent, throttled; received, expired), and when the rooms list is
 * asked for again.
 */
import { roomKey, withRoom } from './conversation';
import type { History } from './history';
import { lastId } from './messageLists';
import type { ResolvedOptions } from './options';
import { isValidRoomName, type ErrorCode, type TypingEventFrame } from './protocol';
import { PASSING_CODES, retryDelay, type Retries } from './retries';
import { newRoom } from './rooms';
import type { SendQueue } from './sendQueue';
import type { Store } from './store';
import type { ConversationKey, RoomState } from './state';

/** How old the server's `rooms` answer may be (it reads the list at most once a second), plus a margin. */
const ROOMS_LIST_MAX_AGE_MS = 1_500;
/** How soon after sending a message the next keystroke may show my typing indicator again (ms). */
const TYPING_AFTER_SEND_MS = 1_000;

type Opts = Pick<ResolvedOptions, 'now' | 'random' | 'typingThrottleMs' | 'typingTtlMs' | 'roomsRefreshMs' | 'roomsRefreshJitter'>;

export class Membership {
  /** when the periodic `rooms` refresh is due (epoch ms); 0: at the next tick */
  private roomsDueAt = 0;
  private readonly typingSentAt = new Map<string, number>();
  /** expiry (epoch ms) of received typing events, by room then user id */
  private readonly typingUntil = new Map<string, Map<number, number>>();

  constructor(
    private readonly opts: Opts,
    private readonly store: Store,
    private readonly queue: SendQueue,
    private readonly history: History,
    private readonly retries: Retries,
    /** a room was left or refused: what else is kept about its conversation goes too */
    private readonly onDropped: (key: ConversationKey) => void,
  ) {}

  /** Joins a room (created by the server on first join). Returns false if the name is invalid. */
  join = (room: string): boolean => {
    if (!isValidRoomName(room)) {
      this.store.pushError('client_invalid', `invalid room name “${room}”: 1–64 letters, digits, “-”, “_” or “.”`);
      return false;
    }
    if (this.store.state.joined[room]) return true;
    this.store.set({ joined: { ...this.store.state.joined, [room]: newRoom(room) } });
    this.sendJoin(this.store.state.joined[room]);
    return true;
  };

  /** Leaves a room; its unsent outbox entries are dropped with it. */
  leave = (room: string): void => {
    if (!this.store.state.joined[room]) return;
    this.queue.send({ type: 'leave', room });
    this.drop(room);
  };

  /** Tells the room I am typing; throttled to one frame per `typingThrottleMs` per room. */
  typing = (room: string): void => {
    if (this.store.state.joined[room]?.status !== 'joined') return;
    const now = this.opts.now();
    const last = this.typingSentAt.get(room);
    if (last !== undefined && now - last < this.opts.typingThrottleMs) return;
    if (this.queue.send({ type: 'typing', room }, true)) this.typingSentAt.set(room, now);
  };

  /**
   * I sent a message to `room`: receivers clear my typing indicator when it arrives, so the next
   * keystroke may show it again, but not sooner than 1 s after sending (a fast sender would
   * double its frame rate).
   */
  wroteIn(room: string): void {
    this.typingSentAt.set(room, this.opts.now() - this.opts.typingThrottleMs + TYPING_AFTER_SEND_MS);
  }

  /** Asks for the rooms list now (skipped when over the send budget); the periodic refresh starts over. */
  refreshRooms = (): void => {
    if (this.queue.send({ type: 'rooms' }, true)) this.scheduleRoomsRefresh();
  };

  /** A new connection: every room is joined again; the rooms list is asked for now, or at the next tick if the joins used the budget. */
  onWelcome(): void {
    this.roomsDueAt = 0;
  }

  /** Joins every room again on a new connection. */
  rejoinAll(): void {
    for (const room of Object.values(this.store.state.joined)) this.sendJoin(room);
  }

  /** Joins a room again whose join was refused for a passing reason. */
  rejoin(name: string): void {
    const room = this.store.state.joined[name];
    if (room) this.sendJoin(room);
  }

  /** The connection went away: nobody is typing any more (the rooms are reset by `reduceDisconnected`). */
  reset(): void {
    this.typingUntil.clear();
  }

  /** On every tick while open: the periodic rooms refresh. */
  refreshIfDue(now: number): void {
    if (this.opts.roomsRefreshMs > 0 && now >= this.roomsDueAt) this.refreshRooms();
  }

  /** A `rooms` answer came: the next periodic refresh is counted from now. */
  onRoomsList(): void {
    this.scheduleRoomsRefresh();
  }

  /**
   * A `left` took this user off a room's count: another tab of theirs may still be there, so the
   * list is asked for again once the server's copy (up to ROOMS_LIST_MAX_AGE_MS old) has the leave.
   */
  onUncounted(): void {
    if (this.opts.roomsRefreshMs > 0) this.roomsDueAt = Math.min(this.roomsDueAt, this.opts.now() + ROOMS_LIST_MAX_AGE_MS);
  }

  /** A typing event shown (see `typingShows`): it goes after `typingTtlMs`. */
  onTyping(frame: TypingEventFrame): void {
    const m = this.typingUntil.get(frame.room) ?? new Map<number, number>();
    m.set(frame.data.userId, this.opts.now() + this.opts.typingTtlMs);
    this.typingUntil.set(frame.room, m);
  }

  /** Typing indicators shown longer than `typingTtlMs` go. */
  expireTyping(now: number): void {
    for (const [room, m] of this.typingUntil) {
      let changed = false;
      for (const [uid, until] of m) {
        if (until <= now) {
          m.delete(uid);
          changed = true;
        }
      }
      if (!changed) continue;
      const still = (r: RoomState) => r.typing.filter((t) => m.has(t.userId));
      this.store.update((s) => withRoom(s, room, (r) => (still(r).length === r.typing.length ? r : { ...r, typing: still(r) })));
    }
  }

  /**
   * A refused `join`: a room the server will not let us in (unknown, bad name) is forgotten, so
   * that it is not joined again on every reconnection; after a passing refusal (or a replay that
   * failed half-way, which undoes the join) it is joined again later, its messages held meanwhile.
   */
  joinRefused(code: ErrorCode, room: string | undefined): void {
    if (room === undefined || !this.store.state.joined[room]) return;
    if (code === 'not_found' || code === 'invalid') {
      this.drop(room);
    } else if (PASSING_CODES.has(code)) {
      this.store.update((s) => withRoom(s, room, (r) => (r.status === 'joining' ? r : { ...r, status: 'joining' })));
      this.retries.later(`join:${room}`, retryDelay(code));
    }
  }

  /** Older servers name no request: a refused join is recognised by its room's name in the message. */
  guessRefusedJoin(code: ErrorCode, message: string): void {
    if (code !== 'not_found' && code !== 'invalid') return;
    for (const r of Object.values(this.store.state.joined)) {
      if (r.status === 'joining' && !r.historyLoaded && message.includes(r.name)) this.drop(r.name);
    }
  }

  /**
   * Joins a room on this connection. Once its history is loaded, with `since` = the last id seen:
   * everything after it is replayed, then live (no gap, no duplicate); else plainly, followed by a
   * request for the latest page.
   */
  private sendJoin(room: RoomState): void {
    if (room.historyLoaded) {
      // The last id seen counts events too (§10: edits, deletes, reactions share the id sequence).
      this.queue.send({ type: 'join', room: room.name, since: Math.max(lastId(room.messages) ?? 0, room.lastEventId ?? 0) });
      return;
    }
    this.queue.send({ type: 'join', room: room.name });
    this.history.requestLatestOnce(roomKey(room.name));
  }

  /** Forgets a room: its requests, its retries, who types there, and its unsent messages. */
  private drop(name: string): void {
    const state = this.store.state;
    if (!state.joined[name]) return;
    const joined = { ...state.joined };
    delete joined[name];
    this.history.forget(roomKey(name));
    this.retries.delete(`join:${name}`);
    this.typingUntil.delete(name);
    this.onDropped(roomKey(name));
    this.store.set({ joined, outbox: state.outbox.filter((p) => !(p.kind === 'message' && p.room === name)) });
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
}
