/**
 * ChatClient: the framework-free engine behind `useChat`. It wires the pieces together, hands
 * each server frame to its reducer and module, and runs the housekeeping tick:
 *  - connection.ts: the socket, authentication, reconnection with backoff, token renewal, ping;
 *  - sendQueue.ts: the send budget every frame goes through;
 *  - outbox.ts: messages written and not acknowledged yet (re-sent with the same clientId);
 *  - history.ts: history pages and DM catch-ups, by conversation key (`r:<room>` | `d:<userId>`);
 *  - membership.ts: joining and leaving rooms, typing, the rooms list's refresh;
 *  - reducers.ts: what each server frame changes in the state snapshot (pure);
 *  - store.ts: the snapshot (`getState()`) and its subscribers.
 * Everything the protocol promises about recovery (PROTOCOL.md §5) is used: on every
 * (re)connection it re-joins its rooms with `since` = last id seen, catches up DMs with
 * `dm_history after`, and re-sends unacknowledged frames, while received messages are
 * de-duplicated by id. The server's extensions are used where offered (see README).
 */
import { backAtNewest, conversationOf, dmKey, parseKey, roomKey, unseen, withConversation, withDm } from './conversation';
import { Connection } from './connection';
import { DmTyping } from './dmTyping';
import { Directory } from './directory';
import {
  reduceDmTyping,
  reduceMessageDeleted,
  reduceMessageEdited,
  reduceReaction,
  reduceSearch,
  withDmTypingEnded,
  withSearchStarted,
} from './eventReducers';
import { lastId } from './messageLists';
import { reduceConversationReads, reduceRead, reduceWelcomeReads, readWouldMove, withArrivals, withReadLocally } from './readState';
import { Membership, type CreateRoomOptions } from './membership';
import { History } from './history';
import { resolveOptions, type ResolvedOptions } from './options';
import { Outbox, startingOutbox } from './outbox';
import {
  contentProblem,
  isValidRoomName,
  type DirectMessage,
  type ErrorAbout,
  type ErrorCode,
  type EventClientFrame,
  type ErrorFrame,
  type MessageId,
  type RoomMessage,
  type ServerFrame,
  type UserId,
  type WelcomeFrame,
} from './protocol';
import {
  peerOf,
  reduceDisconnected,
  reduceDm,
  reduceDmSent,
  reduceJoinAck,
  reduceLeft,
  reduceMessage,
  reducePresence,
  reduceRooms,
  reduceTyping,
  reduceWelcome,
  typingShows,
  withUsers,
  type ReduceEnv,
} from './reducers';
import { Retries } from './retries';
import { newDm, newRoom } from './rooms';
import { SendQueue } from './sendQueue';
import { Store } from './store';
import type { ChatClientOptions, ChatState, Conversation, ConversationKey, DmState, RoomState } from './state';

/** How many results a search asks for (the server's default is 20, its cap 100). */
const SEARCH_LIMIT = 50;

export { CLOSE_CLIENT_TIMEOUT, CLOSE_UNAUTHORIZED } from './connection';
export { jwtExpiresAt } from './options';
export { isRetryable } from './outbox';

/** The client's actions, as `useChat` hands them out (each listed here once). */
export const CHAT_ACTIONS = [
  'join',
  'leave',
  'sendMessage',
  'sendDm',
  'openDm',
  'addDm',
  'loadOlder',
  'setReadingBack',
  'typing',
  'typingTo',
  'markRead',
  'editMessage',
  'deleteMessage',
  'react',
  'unreact',
  'searchMessages',
  'clearSearch',
  'refreshRooms',
  'createRoom',
  'invite',
  'remove',
  'findUsers',
  'clearUsers',
  'retry',
  'discard',
  'dismissError',
  'reconnectNow',
  'stop',
  'start',
] as const;
export type ChatActions = Pick<ChatClient, (typeof CHAT_ACTIONS)[number]>;

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

export class ChatClient {
  private readonly opts: ResolvedOptions;
  private readonly store: Store;
  private readonly retries: Retries;
  private readonly queue: SendQueue;
  private readonly conn: Connection;
  private readonly outbox: Outbox;
  private readonly history: History;
  private readonly membership: Membership;
  private readonly directory: Directory;
  private readonly dmTyping: DmTyping;
  /** conversations whose reader is away from the newest messages: nothing is dropped from them (`maxMessages`) */
  private readonly readingBack = new Set<ConversationKey>();

  constructor(options: ChatClientOptions) {
    const opts = (this.opts = resolveOptions(options));
    const joined: Record<string, RoomState> = {};
    for (const r of options.initialRooms ?? []) if (isValidRoomName(r)) joined[r] = newRoom(r);
    const outbox = startingOutbox(options.initialOutbox ?? [], joined);
    const dms: Record<number, DmState> = {};
    for (const p of outbox) if (p.kind === 'dm' && !dms[p.to!]) dms[p.to!] = newDm(p.to!, `user ${p.to}`);
    this.store = new Store(
      { status: 'idle', me: null, attempt: 0, nextRetryAt: null, lastCloseCode: null, rooms: [], joined, dms, users: {}, userOnline: {}, people: null, outbox, errors: [], reads: {}, search: null },
      opts,
    );
    this.retries = new Retries(opts.now);
    this.conn = new Connection(opts, this.store, {
      onFrame: (frame) => this.onFrame(frame),
      onDown: () => this.onDown(),
      onTick: () => this.tick(),
      send: (frame) => this.queue.send(frame),
    });
    this.queue = new SendQueue(opts, {
      isOpen: () => this.state.status === 'open',
      sendRaw: (frame) => this.conn.sendRaw(frame),
      onDrained: () => this.outbox.pump(),
    });
    this.outbox = new Outbox(opts, this.store, this.queue, this.retries);
    this.history = new History(opts, this.store, this.retries, {
      send: (frame) => this.queue.send(frame),
      env: () => this.env(),
      announce: (key, before, msgs) => {
        this.store.update((s) => withArrivals(s, key, msgs));
        this.announce(key, before, msgs);
      },
    });
    this.dmTyping = new DmTyping(opts, this.store, this.queue);
    this.typingTo = this.dmTyping.typingTo;
    this.membership = new Membership(opts, this.store, this.queue, this.history, this.retries, (key) => this.readingBack.delete(key));
    this.join = this.membership.join;
    this.leave = this.membership.leave;
    this.typing = this.membership.typing;
    this.refreshRooms = this.membership.refreshRooms;
    this.createRoom = this.membership.createRoom;
    this.invite = this.membership.invite;
    this.remove = this.membership.remove;
    this.directory = new Directory(this.store, this.queue);
    this.findUsers = this.directory.findUsers;
    this.clearUsers = this.directory.clearUsers;
  }

  // ----- store and lifecycle --------------------------------------------------

  getState = (): ChatState => this.store.getState();
  subscribe = (listener: () => void): (() => void) => this.store.subscribe(listener);

  /** Starts connecting (no-op while already running). */
  start = (): void => this.conn.start();
  /** Closes with code 1000 and stops reconnecting. State (messages, outbox) is kept; start() resumes. */
  stop = (): void => this.conn.stop();
  /** Skips the remaining backoff delay (e.g. a "retry now" button, or the browser went online). */
  reconnectNow = (): void => this.conn.reconnectNow();

  private get state(): ChatState {
    return this.store.state;
  }

  private env(): ReduceEnv {
    return { maxMessages: this.opts.maxMessages, readingBack: this.readingBack };
  }

  // ----- public actions -------------------------------------------------------

  /** Joins a room (created by the server on first join). Returns false if the name is invalid. */
  readonly join: (room: string) => boolean;
  /** Leaves a room; its unsent outbox entries are dropped with it. */
  readonly leave: (room: string) => void;
  /** Tells the room I am typing; throttled to one frame per `typingThrottleMs` per room. */
  readonly typing: (room: string) => void;
  /** Asks for the rooms list now (skipped when over the send budget); the periodic refresh starts over. */
  readonly refreshRooms: () => void;
  /** Creates a room owned by me, public or private; false if the name is invalid or mine already. */
  readonly createRoom: (room: string, options?: CreateRoomOptions) => boolean;
  /** Makes a user a member of a room of mine. */
  readonly invite: (room: string, userId: UserId) => void;
  /** Ends a user's membership of a room I own. */
  readonly remove: (room: string, userId: UserId) => void;
  /** Searches people by the start of their name (`people`), online ones first, offline ones too. */
  readonly findUsers: (query: string) => void;
  /** Forgets the search. */
  readonly clearUsers: () => void;
  /** Tells user `to` I am typing to them (protocol: `typing` with `to`); throttled like `typing`. */
  readonly typingTo: (to: UserId) => void;

  /**
   * The user has seen `key` up to its newest message (open, scrolled to the bottom, window
   * focused): sends `read` (§9) when that moves its read mark; the counts drop at once.
   */
  markRead = (key: ConversationKey): void => {
    const c = conversationOf(this.state, key);
    const ref = parseKey(key);
    const newest = c ? lastId<RoomMessage | DirectMessage>(c.messages) : null;
    if (!c || !ref || newest === null || !readWouldMove(this.state, key, newest)) return;
    const frame = ref.kind === 'room' ? { type: 'read' as const, room: ref.room, id: newest } : { type: 'read' as const, with: ref.userId, id: newest };
    if (this.queue.send(frame)) this.store.update((s) => withReadLocally(s, key, newest));
  };

  /** Changes the content of a message of mine (§10); false when refused here (bad content, not connected). */
  editMessage = (id: MessageId, content: string): boolean => this.acceptable(content) && this.sendEvent({ type: 'edit', id, content });

  /** Deletes a message of mine (§10); false when not connected. */
  deleteMessage = (id: MessageId): boolean => this.sendEvent({ type: 'delete', id });

  /** Adds my reaction `emoji` to a message (§10); false when not connected. */
  react = (id: MessageId, emoji: string): boolean => this.sendEvent({ type: 'react', id, emoji });

  /** Takes my reaction `emoji` off a message (§10); false when not connected. */
  unreact = (id: MessageId, emoji: string): boolean => this.sendEvent({ type: 'unreact', id, emoji });

  /** Searches my rooms and conversations (§11); the results come in `search`. */
  searchMessages = (query: string): void => {
    const q = query.trim();
    if (!q) return;
    if (this.sendEvent({ type: 'search', query: q, limit: SEARCH_LIMIT })) this.store.update((s) => withSearchStarted(s, q));
  };

  /** Forgets the search and its results. */
  clearSearch = (): void => {
    if (this.state.search) this.store.set({ search: null });
  };

  /** Queues a room message; returns its clientId, or null if it was refused locally. */
  sendMessage = (room: string, content: string): string | null => {
    if (!this.acceptable(content)) return null;
    if (!this.state.joined[room]) {
      this.store.pushError('not_joined', `join #${room} before writing to it`);
      return null;
    }
    this.membership.wroteIn(room);
    return this.outbox.enqueue(roomKey(room), content);
  };

  /** Queues a direct message; returns its clientId, or null if it was refused locally. */
  sendDm = (to: UserId, content: string): string | null => {
    if (!this.acceptable(content)) return null;
    if (!Number.isInteger(to)) {
      this.store.pushError('client_invalid', 'invalid recipient');
      return null;
    }
    this.store.update((s) => withDm(s, to, (d) => d, s.users[to]?.username ?? `user ${to}`));
    this.dmTyping.wroteTo(to);
    return this.outbox.enqueue(dmKey(to), content);
  };

  /** Opens (creates) the conversation with a user and loads its latest page once. */
  openDm = (userId: UserId, username?: string): void => {
    this.addDm(userId, username);
    this.history.open(userId);
  };

  /** Lists the conversation with a user in `dms` without loading it (e.g. one remembered from an earlier visit); `openDm` loads it. */
  addDm = (userId: UserId, username?: string): void => {
    if (!Number.isInteger(userId)) return;
    if (username) this.store.update((s) => withUsers(s, [{ userId, username }]));
    this.store.update((s) => withDm(s, userId, (d) => d, username ?? s.users[userId]?.username ?? `user ${userId}`));
  };

  /** Loads the page of a room's or conversation's messages just before the oldest one loaded. */
  loadOlder = (key: ConversationKey): void => this.history.loadOlder(key);

  /**
   * The reader of a room or conversation is back in its history, away from the newest messages
   * (true), or back at them (false). Meanwhile new messages drop nothing (`maxMessages`): the
   * messages being read stay where they are. Back at the newest, the oldest beyond `maxMessages`
   * are dropped (`hasMore`).
   */
  setReadingBack = (key: ConversationKey, readingBack: boolean): void => {
    if (readingBack) {
      if (conversationOf(this.state, key)) this.readingBack.add(key);
      return;
    }
    this.readingBack.delete(key);
    this.store.update((s) => withConversation(s, key, (c) => backAtNewest(c, this.opts.maxMessages)));
  };

  /** Tries a 'failed' outbox entry again (same clientId); see `isRetryable`. */
  retry = (clientId: string): void => this.outbox.retry(clientId);

  /** Forgets an outbox entry (it may still have been stored if it was sent). */
  discard = (clientId: string): void => this.outbox.discard(clientId);

  dismissError = (id: number): void => {
    this.store.set({ errors: this.state.errors.filter((e) => e.id !== id) });
  };

  // ----- incoming frames ------------------------------------------------------

  private onFrame(frame: ServerFrame): void {
    const state = this.state;
    switch (frame.type) {
      case 'welcome':
        this.conn.welcomed();
        this.queue.fill();
        this.history.onWelcome();
        this.store.update((s) => reduceWelcomeReads(reduceWelcome(s, frame), frame));
        this.membership.onWelcome(frame);
        this.directory.onWelcome();
        this.resync(frame);
        return;
      case 'message': {
        const key = roomKey(frame.data.room);
        this.store.update((s) => reduceMessage(s, frame, this.env()));
        if (this.state.joined[frame.data.room]) this.store.update((s) => withArrivals(s, key, [frame.data]));
        this.announce(key, state.joined[frame.data.room], [frame.data]);
        return;
      }
      case 'dm':
      case 'dm_sent': {
        const m = frame.type === 'dm' ? frame.data : frame.data.message;
        const peer = peerOf(m, state.me?.userId);
        this.store.update((s) => (frame.type === 'dm' ? reduceDm(s, frame, this.env()) : reduceDmSent(s, frame, this.env())));
        this.store.update((s) => withDmTypingEnded(withArrivals(s, dmKey(peer), [m]), m.fromUser));
        this.announce(dmKey(peer), state.dms[peer], [m]);
        // Written from my other device to someone this one never saw: the list has their name.
        if (!state.users[peer]) this.history.requestConversations();
        return;
      }
      case 'room_history':
        this.history.onRoomHistory(frame);
        return;
      case 'dm_history':
        this.history.onDmHistory(frame);
        return;
      case 'conversations':
        this.history.onConversations(frame);
        this.store.update((s) => reduceConversationReads(s, frame));
        return;
      case 'read':
        this.store.update((s) => reduceRead(s, frame));
        return;
      case 'message_edited':
        if (!this.history.holds(frame)) this.store.update((s) => reduceMessageEdited(s, frame));
        return;
      case 'message_deleted':
        if (!this.history.holds(frame)) this.store.update((s) => reduceMessageDeleted(s, frame));
        return;
      case 'reaction':
        if (!this.history.holds(frame)) this.store.update((s) => reduceReaction(s, frame));
        return;
      case 'search':
        this.store.update((s) => reduceSearch(s, frame));
        return;
      case 'join_ack':
        if (!this.membership.acceptsJoinAck(frame)) return;
        this.store.update((s) => reduceJoinAck(s, frame));
        this.membership.joinAcked(frame.room, !!state.joined[frame.room]);
        return;
      case 'left': {
        this.membership.onLeft(frame);
        const before = this.state;
        const next = reduceLeft(before, frame);
        if (next.rooms !== before.rooms) this.membership.onUncounted();
        this.store.replace(next);
        return;
      }
      case 'invited':
        this.membership.onInvited(frame);
        return;
      case 'my_rooms':
        this.membership.onMyRooms(frame);
        return;
      case 'users':
        this.directory.onUsers(frame);
        return;
      case 'presence':
        this.store.update((s) => reducePresence(s, frame));
        return;
      case 'typing': {
        if ('with' in frame) {
          if (frame.data.userId !== state.me?.userId) this.dmTyping.onTyping(frame.with);
          this.store.update((s) => reduceDmTyping(s, frame));
          return;
        }
        if (typingShows(state, frame)) this.membership.onTyping(frame);
        this.store.update((s) => reduceTyping(s, frame));
        return;
      }
      case 'rooms':
        this.membership.onRoomsList();
        this.store.update((s) => reduceRooms(s, frame));
        return;
      case 'error':
        this.onServerError(frame.code, frame.message, aboutOf(frame));
        return;
      case 'pong':
        return;
    }
  }

  /** New messages that arrived live (or with a catch-up) go to `onMessage` / `onDm`, once. */
  private announce(key: ConversationKey, before: Conversation | undefined, msgs: Array<RoomMessage | DirectMessage>): void {
    const ref = parseKey(key);
    if (ref?.kind === 'room') {
      if (!before || !this.opts.onMessage) return;
      for (const m of unseen(before.messages, msgs)) this.opts.onMessage(m as RoomMessage);
    } else if (this.opts.onDm) {
      for (const m of unseen(before?.messages ?? [], msgs)) this.opts.onDm(m as DirectMessage);
    }
  }

  /**
   * A server `error`. Servers with the extension name the request it answers (`about`): then a
   * refused join, history page or outbox entry is handled precisely; older servers name nothing,
   * and the client guesses what it can.
   */
  private onServerError(code: ErrorCode, message: string, about: ErrorAbout): void {
    if (this.history.conversationsRefused(code, about)) return;
    switch (about.requestType) {
      case undefined:
        this.membership.guessRefusedJoin(code, message);
        // Unacknowledged frames may have been refused (the error names none): re-send them all sooner.
        if (code === 'rate_limited' || code === 'unavailable') this.outbox.resendSoon(code);
        break;
      case 'join':
      case 'join_room':
      case 'create_room':
        this.membership.joinRefused(code, about.room);
        break;
      case 'users':
        this.directory.refused();
        break;
      case 'my_rooms':
        // Nothing the user asked for: the rooms stay as they are, and the list is asked for again.
        this.membership.myRoomsRefused(code);
        return;
      case 'room_history':
        if (about.room !== undefined) this.history.refused(roomKey(about.room), code);
        break;
      case 'dm_history':
        if (about.with !== undefined) this.history.refused(dmKey(about.with), code);
        break;
    }
    // A message that only waits for its room to be joined again is no news for the user.
    if (about.clientId !== undefined && this.outbox.refused(code, message, about.clientId)) return;
    this.store.pushError(code, message, about);
  }

  // ----- connection events and housekeeping -----------------------------------

  /** After `welcome`: bring the server up to date with what this client is and had. */
  private resync(welcome: WelcomeFrame): void {
    this.membership.rejoinAll();
    for (const dm of Object.values(this.state.dms)) this.history.loadIfOpened(dm);
    this.refreshRooms();
    // Names the conversations with news (caught up then) and those this client does not know yet
    // (new device, reloaded page). Without it (older servers) every loaded conversation catches up.
    const listed = welcome.data.conversations;
    if (listed) this.history.onConversations({ type: 'conversations', data: listed });
    else this.history.requestConversations();
    // Same clientId as before: the server answers with the stored message instead of storing it twice.
    this.outbox.pump();
  }

  /** What was tied to the socket that just went away. Messages, DMs and the outbox are kept. */
  private onDown(): void {
    this.queue.reset();
    this.history.reset();
    this.retries.clear();
    this.membership.reset();
    this.directory.reset();
    this.dmTyping.reset();
    this.store.update(reduceDisconnected);
  }

  private tick(): void {
    const now = this.opts.now();
    this.membership.expireTyping(now);
    this.dmTyping.expire(now);
    if (this.state.status !== 'open') return;
    if (!this.conn.keepalive(now)) return;
    this.membership.refreshIfDue(now);
    for (const key of this.retries.takeDue(now)) {
      if (key === 'conversations') this.history.requestConversations();
      else if (key === 'my_rooms') this.membership.confirmRooms();
      else if (key.startsWith('history:')) this.history.resume(key.slice('history:'.length) as ConversationKey);
      else this.membership.rejoin(key.slice('join:'.length));
    }
    this.history.expire(now);
    // Re-send what was not acknowledged (same clientId, so never stored twice).
    this.outbox.pump();
  }

  /** Sends an edit, delete, reaction or search; refused here (and said) while not connected. */
  private sendEvent(frame: EventClientFrame): boolean {
    if (this.state.status === 'open' && this.queue.send(frame)) return true;
    this.store.pushError('client_invalid', 'Not connected: try again once the connection is back.');
    return false;
  }

  /** Whether `content` may be sent (else the problem is shown): not blank, not too long, well formed. */
  private acceptable(content: string): boolean {
    const problem = contentProblem(content);
    if (problem) this.store.pushError('client_invalid', problem);
    return !problem;
  }
}
