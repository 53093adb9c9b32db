/**
 * Room membership: joining (again on every connection, with `since` once loaded), leaving, creating
 * rooms and inviting or removing people, following the memberships the server stores (`welcome`,
 * `my_rooms`, and `join_ack` / `left` / `invited` caused by my other devices or other people),
 * rooms refused by the server, typing (sent, throttled; received, expired), and when the rooms list
 * is asked for again.
 */
import { roomKey, withRoom } from './conversation';
import type { History } from './history';
import { lastId } from './messageLists';
import type { ResolvedOptions } from './options';
import {
  isValidRoomName,
  type ClientFrame,
  type ErrorCode,
  type InvitedFrame,
  type JoinAckFrame,
  type LeftFrame,
  type MemberRoom,
  type MyRoomsFrame,
  type TypingEventFrame,
  type UserId,
  type WelcomeFrame,
} from './protocol';
import { reduceInvited, reduceLeftElsewhere, reduceMemberRooms, withoutRoom } from './memberReducers';
import { PASSING_CODES, retryDelay, type Retries } from './retries';
import { newRoom } from './rooms';
import type { SendQueue } from './sendQueue';
import type { Store } from './store';
import type { ConversationKey, MembershipEvent, RoomState } from './state';

/** How old the server's `rooms` answer may be (it reads the list at most once a second), plus a margin. */
const ROOMS_LIST_MAX_AGE_MS = 1_500;
/** How many rooms `welcome` lists at most: a list that long may have more (asked with `my_rooms`). */
const WELCOME_ROOMS_MAX = 200;
/** `my_rooms` page size: the server's cap, so that few pages are needed. */
const MY_ROOMS_PAGE = 1000;
/** How soon after sending a message the next keystroke may show my typing indicator again (ms). */
const TYPING_AFTER_SEND_MS = 1_000;

type Opts = Pick<
  ResolvedOptions,
  'now' | 'random' | 'typingThrottleMs' | 'typingTtlMs' | 'roomsRefreshMs' | 'roomsRefreshJitter' | 'defaultRooms' | 'onMembership'
>;

/** What to create a room with. */
export interface CreateRoomOptions {
  private?: boolean;
  description?: string;
}

export class Membership {
  /** when the periodic `rooms` refresh is due (epoch ms); 0: at the next tick */
  private roomsDueAt = 0;
  private readonly typingSentAt = new Map<string, number>();
  /** expiry (epoch ms) of received typing events, by room then user id */
  private readonly typingUntil = new Map<string, Map<number, number>>();
  /**
   * Rooms I asked to join or to create, not acknowledged yet, with the frame that asks: sent again
   * on a new connection, and kept when the server's list of my rooms does not have them yet.
   */
  private readonly asked = new Map<string, ClientFrame>();
  /** Rooms I left whose `left` has not come yet: a `join_ack` sent before it does not bring them back. */
  private readonly leaving = new Set<string>();
  /** my rooms the server listed so far on this connection while the list is not whole yet (`welcome`, then `my_rooms` pages) */
  private listing: MemberRoom[] | null = null;
  /**
   * Rooms this client had that the server has not listed yet while the list is not whole: not
   * joined meanwhile (a `join` would make me a member again of a room I left elsewhere); joined
   * once listed, dropped once the whole list lacks them.
   */
  private readonly unconfirmed = new Set<string>();

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
    this.asked.set(room, { type: 'join', room });
    this.leaving.delete(room);
    this.store.set({ joined: { ...this.store.state.joined, [room]: newRoom(room) } });
    this.sendJoin(this.store.state.joined[room]);
    return true;
  };

  /**
   * Creates a room owned by me, public or private (PROTOCOL.md §8), and lists it at once; a name
   * that is taken is refused by the server (the room goes again, the error is shown). Returns
   * false if the name is invalid or already one of my rooms.
   */
  createRoom = (room: string, options: CreateRoomOptions = {}): boolean => {
    if (!isValidRoomName(room)) {
      this.store.pushError('client_invalid', `invalid room name “${room}”: 1–64 letters, digits, “-”, “_” or “.”`);
      return false;
    }
    if (this.store.state.joined[room]) {
      this.store.pushError('client_invalid', `you are a member of #${room} already`);
      return false;
    }
    const frame: ClientFrame = { type: 'create_room', room, private: !!options.private };
    if (options.description) frame.description = options.description;
    this.asked.set(room, frame);
    this.leaving.delete(room);
    this.store.set({ joined: { ...this.store.state.joined, [room]: newRoom(room, !!options.private) } });
    this.queue.send(frame);
    return true;
  };

  /** Makes a user a member of a room of mine (they get `invited`); refusals come as errors. */
  invite = (room: string, userId: UserId): void => {
    if (this.store.state.joined[room] && Number.isInteger(userId)) this.queue.send({ type: 'invite', room, userId });
  };

  /** Ends a user's membership of a room I own; refusals (`forbidden`: not the owner) come as errors. */
  remove = (room: string, userId: UserId): void => {
    if (this.store.state.joined[room] && Number.isInteger(userId)) this.queue.send({ type: 'remove', room, userId });
  };

  /** Leaves a room; its unsent outbox entries are dropped with it. */
  leave = (room: string): void => {
    if (!this.store.state.joined[room]) return;
    this.queue.send({ type: 'leave', room });
    this.asked.delete(room);
    this.leaving.add(room);
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

  /**
   * A new connection: the rooms list is asked for now, or at the next tick if the joins used the
   * budget. A server that stores membership lists my rooms (`welcome.rooms`): they are mine now,
   * whatever this client had (left or removed elsewhere meanwhile: dropped once the list is
   * known to be whole), but for joins asked here and not acknowledged yet. A full list (200) is
   * completed with `my_rooms`; an empty one, while this client has rooms, is checked with
   * `my_rooms` first (a server that cannot read the database greets with no rooms, and answers
   * `my_rooms` with `unavailable`). A user who is a member of nothing joins `defaultRooms`.
   */
  onWelcome(frame: WelcomeFrame): void {
    this.roomsDueAt = 0;
    this.leaving.clear();
    this.listing = null;
    this.unconfirmed.clear();
    this.retries.delete('my_rooms');
    const rooms = frame.data.rooms;
    if (!rooms) return;
    const listed = new Set(rooms.map((r) => r.room));
    // Mine already (the answer was lost with the connection): joined, not asked for (or created) again.
    for (const r of listed) this.asked.delete(r);
    const unlisted = Object.keys(this.store.state.joined).filter((r) => !this.asked.has(r) && !listed.has(r));
    if (rooms.length >= WELCOME_ROOMS_MAX || (rooms.length === 0 && unlisted.length)) {
      this.store.update((s) => reduceMemberRooms(s, rooms, new Set(this.asked.keys()), false));
      for (const r of unlisted) this.unconfirmed.add(r);
      this.listing = [...rooms];
      this.queue.send({ type: 'my_rooms', offset: rooms.length, limit: MY_ROOMS_PAGE });
      return;
    }
    this.following(() => this.store.update((s) => reduceMemberRooms(s, rooms, new Set(this.asked.keys()), true)));
    if (rooms.length === 0 && this.asked.size === 0) {
      // Listed as asked for: `rejoinAll` joins them with the others.
      for (const r of this.opts.defaultRooms) {
        if (!isValidRoomName(r) || this.store.state.joined[r]) continue;
        this.asked.set(r, { type: 'join', room: r });
        this.store.set({ joined: { ...this.store.state.joined, [r]: newRoom(r) } });
      }
    }
  }

  /** Asks the server for the whole list of my rooms again (after a passing refusal of `my_rooms`). */
  confirmRooms(): void {
    this.listing = [];
    this.queue.send({ type: 'my_rooms', offset: 0, limit: MY_ROOMS_PAGE });
  }

  /**
   * A page of `my_rooms`: its rooms are listed and joined; a full page is followed by the next
   * one; the last one completes the list, and the rooms not in it go.
   */
  onMyRooms(frame: MyRoomsFrame): void {
    const before = this.store.state.joined;
    this.store.update((s) => reduceMemberRooms(s, frame.data, new Set(this.asked.keys()), false));
    for (const r of frame.data) {
      this.asked.delete(r.room);
      if (before[r.room] && !this.unconfirmed.delete(r.room)) continue;
      this.sendJoin(this.store.state.joined[r.room]);
    }
    if (this.listing === null) return;
    this.listing.push(...frame.data);
    if (frame.data.length >= MY_ROOMS_PAGE) {
      this.queue.send({ type: 'my_rooms', offset: this.listing.length, limit: MY_ROOMS_PAGE });
      return;
    }
    const all = this.listing;
    this.listing = null;
    this.unconfirmed.clear();
    this.following(() => this.store.update((s) => reduceMemberRooms(s, all, new Set(this.asked.keys()), true)));
  }

  /** `my_rooms` refused: the rooms stay as they are (not joined); after a passing refusal the list is asked for again later. */
  myRoomsRefused(code: ErrorCode): void {
    if (this.listing === null) return;
    this.listing = null;
    if (PASSING_CODES.has(code)) this.retries.later('my_rooms', retryDelay(code));
  }

  /**
   * `join_ack`: false when it is to be ignored (a room I left since, whose `left` is on its way).
   * Else, after it is reduced (`joined`), call `joinAcked`.
   */
  acceptsJoinAck(frame: JoinAckFrame): boolean {
    return !this.leaving.has(frame.room) || this.asked.has(frame.room);
  }

  /**
   * A room acknowledged (`wasListed`: it was in `joined` before the ack): no longer asked for. One
   * not loaded yet loads its latest page; one new here (joined or created on another device) is
   * looked up in the rooms list, which says whether it is private (the ack does not).
   */
  joinAcked(room: string, wasListed: boolean): void {
    const askedHere = this.asked.delete(room);
    this.leaving.delete(room);
    const r = this.store.state.joined[room];
    if (r && !r.historyLoaded) this.history.requestLatestOnce(roomKey(room));
    if (!wasListed && !askedHere) this.refreshRooms();
  }

  /**
   * `left`: my membership ended. A room still listed here was left on another device, or I was
   * removed by its owner (`reason: "removed"`, told through `onMembership`). A room joined again
   * here since (leave, then join) stays: its join is on its way.
   */
  onLeft(frame: LeftFrame): void {
    this.leaving.delete(frame.room);
    if (this.asked.has(frame.room) || !this.store.state.joined[frame.room]) return;
    this.forget(frame.room);
    this.store.update((s) => reduceLeftElsewhere(s, frame.room));
    if (frame.reason === 'removed') this.tell({ kind: 'removed', room: frame.room });
  }

  /** `invited`: the room is listed at once (its `join_ack` follows), and the user is told. */
  onInvited(frame: InvitedFrame): void {
    this.leaving.delete(frame.room);
    this.store.update((s) => reduceInvited(s, frame));
    this.tell({ kind: 'invited', room: frame.room, by: frame.data.by });
  }

  /** Joins every room again on a new connection (but those the server has not listed as mine yet). */
  rejoinAll(): void {
    for (const room of Object.values(this.store.state.joined)) if (!this.unconfirmed.has(room.name)) this.sendJoin(room);
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
      this.asked.delete(room);
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
    const asked = this.asked.get(room.name);
    if (asked?.type === 'create_room') {
      this.queue.send(asked);
      return;
    }
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
    if (!this.store.state.joined[name]) return;
    this.forget(name);
    this.store.update((s) => withoutRoom(s, name));
  }

  /** What is kept about a room besides the state: its requests, its retries, who types there. */
  private forget(name: string): void {
    this.history.forget(roomKey(name));
    this.retries.delete(`join:${name}`);
    this.typingUntil.delete(name);
    this.onDropped(roomKey(name));
  }

  /** Runs `change` and forgets what was kept about the rooms it dropped. */
  private following(change: () => void): void {
    const before = Object.keys(this.store.state.joined);
    change();
    for (const name of before) if (!this.store.state.joined[name]) this.forget(name);
  }

  private tell(event: MembershipEvent): void {
    this.opts.onMembership?.(event);
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
