/**
 * The shapes of ChatClient's state snapshot (`getState()`, what `useChat` returns) and of its options.
 *
 * Types only: the client and its reducers (reducers.ts) build and replace these objects, never change them.
 */
import type { BackoffOptions } from './backoff';
import type { DirectMessage, ErrorAbout, ErrorCode, MessageId, ReadCounts, RoomInfo, RoomMessage, UserId, UserInfo, UserRef } from './protocol';

export type ConnectionStatus =
  /** not started yet */
  | 'idle'
  /** first connection attempt in progress (token, socket, waiting for `welcome`) */
  | 'connecting'
  /** authenticated, frames flow */
  | 'open'
  /** lost the connection (or never got one): waiting for / running the next attempt */
  | 'reconnecting'
  /** the server refused our token `maxAuthFailures` times in a row (close 4001): gave up */
  | 'unauthorized'
  /** stopped by the caller (`stop()`, close code 1000): no reconnection */
  | 'closed';

/** A conversation's key: `r:<room>` for a room, `d:<userId>` for the direct messages with a user. */
export type ConversationKey = `r:${string}` | `d:${number}`;

/** What a room and a DM conversation have in common: their messages and how much of their history is loaded. */
export interface ConversationState<M extends RoomMessage | DirectMessage> {
  /** sorted by id, no duplicates */
  messages: M[];
  /** the latest page has been loaded at least once */
  historyLoaded: boolean;
  /** there may be older messages than `messages[0]` */
  hasMore: boolean;
  loadingOlder: boolean;
  /**
   * The newest `eventId` (edit, delete, reaction: §10) received for it. With the newest message id,
   * it is the "last id seen" a `join` resumes from (`since`), so missed events are replayed once.
   */
  lastEventId?: MessageId;
}

export interface RoomState extends ConversationState<RoomMessage> {
  name: string;
  /** 'joining' until `join_ack` arrives (again after every reconnection) */
  status: 'joining' | 'joined';
  /** who is online in the room (from join_ack, then presence events) */
  users: UserRef[];
  /**
   * How many users are online in the room, where the server says (`join_ack.data.online`, then
   * kept current with presence events and the rooms list). Larger than `users.length` in crowded
   * rooms, whose list the server caps. null: the server does not send it.
   */
  online: number | null;
  /** others typing right now (entries expire after `typingTtlMs`) */
  typing: UserRef[];
  /** a private room: it exists for its members only, who join it by invitation */
  private: boolean;
  /** how many members the room has (`join_ack.data.members`); null: not told */
  members: number | null;
  /**
   * The room's owner (`join_ack.data.owner`, an extension): the one user who may remove members.
   * null: none (a room made by `join`), or a server that does not say.
   */
  owner: UserId | null;
}

export interface DmState extends ConversationState<DirectMessage> {
  /** the other user */
  userId: UserId;
  username: string;
  /**
   * id of the conversation's newest message according to the server's `conversations` list
   * (null: not listed), e.g. to order conversations whose messages are not loaded yet
   */
  listedLastId: MessageId | null;
  /** the other user, while typing to me (expires after `typingTtlMs`) */
  typing: UserRef[];
}

/** The read state of a room or conversation (protocol §9), as the server last told it and counted on since. */
export interface ReadMark extends ReadCounts {
  /**
   * The newest id `unread` and `mentions` include: messages replayed up to it (a `join` with
   * `since`, a DM catch-up) were counted by the server already; later ones are counted here.
   */
  countedUpTo: MessageId;
}

/** A search (protocol §11) and its results, newest first. */
export interface SearchState {
  query: string;
  /** null: the server has not answered yet */
  results: Array<RoomMessage | DirectMessage> | null;
}

/** A room or a DM conversation (see `ConversationKey`). */
export type Conversation = RoomState | DmState;

export interface PendingMessage {
  clientId: string;
  kind: 'message' | 'dm';
  room?: string;
  to?: UserId;
  content: string;
  createdAt: number;
  /** how many times it was put on a socket */
  attempts: number;
  lastSentAt: number | null;
  /** 'queued': not sent on the current connection; 'sent': waiting for the server's echo;
   *  'failed': gave up after `maxSendAttempts`, or refused by the server (see `error`):
   *  use retry() (where `isRetryable`) or discard() */
  status: 'queued' | 'sent' | 'failed';
  /** why the server refused it, when its error named this clientId ('failed' entries only) */
  error?: { code: ErrorCode; message: string };
}

/** `requestType`, `room` and `clientId`: what a server error names of the request it answers (servers with that extension). */
export interface ChatError extends ErrorAbout {
  /** increasing, unique per client */
  id: number;
  code: ErrorCode;
  message: string;
  at: number;
}

export interface ChatState {
  status: ConnectionStatus;
  me: UserRef | null;
  /** consecutive connection attempts that did not last `stableAfterMs` */
  attempt: number;
  /** when the next attempt is due (epoch ms) while status is 'reconnecting' */
  nextRetryAt: number | null;
  lastCloseCode: number | null;
  /**
   * From the latest `rooms` frame, refreshed on every (re)connection and every `roomsRefreshMs`
   * (jittered). In between, the online counts of joined rooms are kept current locally: presence
   * events (+1 for a user not counted yet, -1 for one who was), `join_ack` (which also adds a room
   * missing from the list) and `left`.
   */
  rooms: RoomInfo[];
  /**
   * The rooms I am a member of (or joining), by name. With a server that stores membership
   * (`welcome.rooms`) it follows the user's other devices: a room joined, left, created or
   * invited to there is added or dropped here too.
   */
  joined: Record<string, RoomState>;
  /** DM conversations, by the other user's id */
  dms: Record<number, DmState>;
  /** every user seen so far (presence, join_ack, messages) */
  users: Record<number, UserRef>;
  /** whether a user is connected anywhere, as the latest `users` answer naming them said */
  userOnline: Record<number, boolean>;
  /** the latest `findUsers` search: its query and its answer (null while it is on its way) */
  people: { query: string; results: UserInfo[] | null } | null;
  /** frames sent but not yet acknowledged by the server, in sending order */
  outbox: PendingMessage[];
  /** latest errors, oldest first (at most `maxErrors`) */
  errors: ChatError[];
  /** read state by conversation key (servers with protocol §9): unread and mention counts */
  reads: Record<string, ReadMark>;
  /** the latest search, null when there is none */
  search: SearchState | null;
}

/** A change of my memberships someone else made. */
export type MembershipEvent = { kind: 'invited'; room: string; by: UserRef | null } | { kind: 'removed'; room: string };

export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  // Event parameters are `any` so that both the DOM WebSocket and the `ws` package fit.
  /* eslint-disable @typescript-eslint/no-explicit-any */
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  /* eslint-enable @typescript-eslint/no-explicit-any */
}
export type WebSocketCtor = new (url: string) => WebSocketLike;

export interface TokenContext {
  /** 0 for the first attempt, then consecutive failed attempts */
  attempt: number;
  /**
   * 'unauthorized' when the server just refused the previous token (close 4001): refresh it.
   * 'refresh' while connected, shortly before the connection's token expires: return a fresh
   * one to stay connected (the same token again: the server closes at its expiry, then
   * 'unauthorized' follows).
   */
  reason: 'initial' | 'reconnect' | 'unauthorized' | 'refresh';
}

export interface ChatClientOptions {
  /** ws:// or wss:// URL of the server endpoint, e.g. `wss://chat.example/ws` */
  url: string;
  /** returns the JWT; called before every connection attempt. null/undefined = no credentials: stop. */
  getToken: (ctx: TokenContext) => Promise<string | null | undefined> | string | null | undefined;
  /**
   * Rooms to join when the client starts. A server that stores membership lists my rooms in
   * `welcome`: then these are kept only if I am a member of them (they were remembered from an
   * earlier visit; left elsewhere since, they go).
   */
  initialRooms?: string[];
  /** Rooms joined when the server says I am a member of no room at all (a new user). Default none. */
  defaultRooms?: string[];
  /**
   * Outbox entries of an earlier client of the same user (e.g. `outbox` before the token expired
   * and the user signed in again): sent again with their clientId, so never stored twice. Room
   * messages need their room among `initialRooms`.
   */
  initialOutbox?: PendingMessage[];
  /** WebSocket implementation; defaults to globalThis.WebSocket */
  WebSocket?: WebSocketCtor;
  backoff?: BackoffOptions;
  /** a connection must stay up this long before the backoff resets (ms). Default 10000. */
  stableAfterMs?: number;
  /** give up on a socket that did not say `welcome` within this time (ms). Default 10000. */
  welcomeTimeoutMs?: number;
  /** send an application `ping` after this much silence (ms); 0 disables. Default 25000. */
  pingIntervalMs?: number;
  /** drop the connection if nothing at all arrived within this long after a `ping` (ms). Default 10000. */
  pongTimeoutMs?: number;
  /** history page size (1..200). Default 50. */
  historyPageSize?: number;
  /**
   * At most this many messages are kept per room and per conversation: when new ones arrive, the
   * oldest beyond it are dropped (`hasMore` becomes true and `loadOlder` fetches them again).
   * Older pages loaded on purpose are kept until the next new message. Nothing is dropped while
   * the reader is back in the history (`setReadingBack`): the list is trimmed when they return to
   * the newest messages. Default 1000.
   */
  maxMessages?: number;
  /** at most one `typing` frame per room per this many ms. Default 3000. */
  typingThrottleMs?: number;
  /** how long a received typing event is shown (ms). Default 5000. */
  typingTtlMs?: number;
  /** re-send an unacknowledged frame (same clientId) after this long (ms). Default 8000. */
  resendAfterMs?: number;
  /** after this many sends without acknowledgement an outbox entry is marked 'failed'. Default 5. */
  maxSendAttempts?: number;
  /**
   * After close code 1001 (the server is shutting down or restarting) the first retry waits a
   * random time in [goingAwayMinMs, goingAwayMaxMs]: spreads the reconnection storm of every
   * client, and avoids landing on the process that is going away. Defaults 1000 and 3000.
   */
  goingAwayMinMs?: number;
  goingAwayMaxMs?: number;
  /**
   * Client-side send budget per connection, below the server's rate limit (a burst of 30 frames
   * then 10/s, all types together): frames beyond it wait (joins, history, messages, in order)
   * or are skipped (typing, rooms refreshes) instead of being refused as rate_limited. Defaults 24 and 8.
   */
  rateBurst?: number;
  ratePerSecond?: number;
  /**
   * Ask `getToken` for a fresh token this long before the connection's token expires, and hand
   * it to the server on the open connection (it closes a connection whose token expired with
   * 4001); a token that lives less than twice this is renewed half-way. 0 disables. Default 60000.
   */
  refreshBeforeExpiryMs?: number;
  /** when a token expires (epoch ms), null if never or unknown. Default: the JWT's `exp`, read unverified. */
  tokenExpiresAt?: (token: string) => number | null;
  /** consecutive 4001 closes before giving up with status 'unauthorized'. Default 3. */
  maxAuthFailures?: number;
  /**
   * Refresh the `rooms` list this often while open (ms), plus a random share of it up to
   * `roomsRefreshJitter` (0.5: every 30–45 s), so that the clients connected at the same moment
   * (a server restart) do not all ask in the same second; 0 disables. It is also refreshed on every
   * (re)connection; presence events only update the counts locally. Default 30000.
   */
  roomsRefreshMs?: number;
  /** the random part of the `rooms` refresh period, as a share of `roomsRefreshMs`. Default 0.5. */
  roomsRefreshJitter?: number;
  /** a history request without an answer is forgotten after this long (ms). Default 15000. */
  historyTimeoutMs?: number;
  /** housekeeping timer period (ms). Default 1000. */
  tickMs?: number;
  /** how many errors `state.errors` keeps. Default 5. */
  maxErrors?: number;
  onError?: (error: ChatError) => void;
  /** each new room message, live or replayed after a reconnection (not history pages), once */
  onMessage?: (message: RoomMessage) => void;
  /** each new DM, live or brought by a catch-up after a reconnection (not history pages), once */
  onDm?: (message: DirectMessage) => void;
  /** I was invited to a room (`by` someone), or removed from one by its owner: worth telling the user */
  onMembership?: (event: MembershipEvent) => void;
  /** injectable for tests */
  random?: () => number;
  generateClientId?: () => string;
  now?: () => number;
}
