/**
 * Typed frames of the chat wire protocol (docs/protocol.md; v2 where the server serves it).
 *
 * Every frame is one JSON object with a `type`. The unions below cover the whole protocol;
 * unknown `type`s and unknown fields coming from the server must be ignored by clients
 * (the protocol grows by extension), which is why `ServerFrame` parsing is lenient.
 */

import { EVENT_SERVER_TYPES, parseEventFrame, parseMessageEvents, readCountsOf, type MessageEventFrame, type DmTypingEventFrame, type EventClientFrame, type EventServerFrame, type ReadCounts } from './events';

export * from './events';

export type UserId = number;
export type MessageId = number;

export interface UserRef {
  userId: UserId;
  username: string;
}

/** `message` data: a message stored in a room. */
export interface RoomMessage {
  id: MessageId;
  fromUser: UserId;
  username: string;
  content: string;
  /** RFC 3339, UTC, microseconds, `Z` suffix. */
  timestamp: string;
  room: string;
  clientId?: string;
  /** when it was last edited (§10) */
  editedAt?: string;
  /** deleted (§10): `content` is '' */
  deleted?: boolean;
  /** emoji -> the ids of the users who reacted with it, in reaction order (§10) */
  reactions?: Record<string, UserId[]>;
}

/** `dm` data: a stored direct message. */
export interface DirectMessage {
  id: MessageId;
  fromUser: UserId;
  username: string;
  to: UserId;
  content: string;
  timestamp: string;
  clientId?: string;
  /** when it was last edited (§10) */
  editedAt?: string;
  /** deleted (§10): `content` is '' */
  deleted?: boolean;
  /** emoji -> the ids of the users who reacted with it, in reaction order (§10) */
  reactions?: Record<string, UserId[]>;
}

/** One entry of the `conversations` list (a server extension): a DM partner and the newest id. */
export interface ConversationInfo {
  userId: UserId;
  username: string;
  /** id of the newest message of the conversation */
  lastId: MessageId | null;
  /** its read state (§9); absent from older servers */
  read?: ReadCounts;
}

export interface RoomInfo {
  name: string;
  description?: string | null;
  online: number;
  /** how many members the room has (servers with stored membership) */
  members?: number;
  /** a private room (listed only to its members) */
  private?: boolean;
  /** whether the caller is a member */
  member?: boolean;
}

/** One room of `welcome.rooms` / `my_rooms`: a room the user is a member of. */
export interface MemberRoom {
  room: string;
  private: boolean;
  /** the room's newest message id as the connection stands (0: none) */
  lastId: MessageId;
  /** its read state (§9); absent from older servers */
  read?: ReadCounts;
}

/** One answer of a `users` search: a user, and whether they are connected anywhere. */
export interface UserInfo extends UserRef {
  online: boolean;
}

export type ErrorCode =
  | 'bad_json'
  | 'unknown_type'
  | 'invalid'
  | 'not_joined'
  | 'not_found'
  | 'too_large'
  | 'rate_limited'
  | 'unauthorized'
  | 'unavailable'
  | 'internal'
  // codes produced by the client itself (never sent by the server)
  | 'client_invalid'
  | 'token'
  | (string & {});

// ---------------------------------------------------------------------------
// Client -> server (§2)
// ---------------------------------------------------------------------------

export interface AuthFrame {
  type: 'auth';
  token: string;
}
export interface JoinFrame {
  type: 'join';
  room: string;
  since?: MessageId;
}
export interface LeaveFrame {
  type: 'leave';
  room: string;
}
export interface SendMessageFrame {
  type: 'message';
  room: string;
  content: string;
  clientId?: string;
}
export interface SendDmFrame {
  type: 'dm';
  to: UserId;
  content: string;
  clientId?: string;
}
export interface RoomHistoryRequestFrame {
  type: 'room_history';
  room: string;
  limit?: number;
  before?: MessageId;
  after?: MessageId;
}
export interface DmHistoryRequestFrame {
  type: 'dm_history';
  with: UserId;
  limit?: number;
  before?: MessageId;
  after?: MessageId;
}
export interface TypingFrame {
  type: 'typing';
  room: string;
}
export interface RoomsRequestFrame {
  type: 'rooms';
}
export interface PingFrame {
  type: 'ping';
}
/** Extension: asks for my DM partners, latest first (a server without it answers `unknown_type`). */
export interface ConversationsRequestFrame {
  type: 'conversations';
}

/** Creates a room owned by the caller (PROTOCOL.md §8); answered by `join_ack`. */
export interface CreateRoomFrame {
  type: 'create_room';
  room: string;
  private?: boolean;
  description?: string;
}
/** Makes a user a member of a room of mine (§8); no answer on success. */
export interface InviteFrame {
  type: 'invite';
  room: string;
  userId: UserId;
}
/** Ends a user's membership of a room I own (§8); no answer on success. */
export interface RemoveFrame {
  type: 'remove';
  room: string;
  userId: UserId;
}
/** The rooms I am a member of, past the 200 `welcome` lists. */
export interface MyRoomsRequestFrame {
  type: 'my_rooms';
  limit?: number;
  offset?: number;
}
/** Users whose name starts with `query`, the online ones first. */
export interface UsersRequestFrame {
  type: 'users';
  query?: string;
  limit?: number;
}

export type ClientFrame =
  | CreateRoomFrame
  | InviteFrame
  | RemoveFrame
  | MyRoomsRequestFrame
  | UsersRequestFrame
  | AuthFrame
  | JoinFrame
  | LeaveFrame
  | SendMessageFrame
  | SendDmFrame
  | RoomHistoryRequestFrame
  | DmHistoryRequestFrame
  | TypingFrame
  | RoomsRequestFrame
  | PingFrame
  | ConversationsRequestFrame
  | EventClientFrame;

// ---------------------------------------------------------------------------
// Server -> client (§3)
// ---------------------------------------------------------------------------

export interface WelcomeFrame {
  type: 'welcome';
  /** `rooms` and `conversations`: servers with stored membership (absent on older ones) */
  data: { userId: UserId; username: string; serverTime: string; rooms?: MemberRoom[]; conversations?: ConversationInfo[] };
}
export interface MessageFrame {
  type: 'message';
  data: RoomMessage;
}
export interface DmFrame {
  type: 'dm';
  data: DirectMessage;
}
export interface DmSentFrame {
  type: 'dm_sent';
  data: { to: UserId; status: 'ok'; message: DirectMessage };
}
/** The page a history answer is for, where the server echoes it (this one does). */
export interface PageEcho {
  limit?: number;
  before?: MessageId;
  after?: MessageId;
}
export interface RoomHistoryFrame extends PageEcho {
  type: 'room_history';
  room: string;
  data: RoomMessage[];
}
export interface DmHistoryFrame extends PageEcho {
  type: 'dm_history';
  with: UserId;
  data: DirectMessage[];
  /**
   * A catch-up's answer (`after`): the edits, deletes and reactions of the conversation since, in
   * id order, to apply after `data` (absent on older servers and on other pages).
   */
  events?: MessageEventFrame[];
  /** `events` was cut at the server's cap: the rest comes `after` its last eventId */
  more?: boolean;
}
/**
 * What an error names of the request it answers (a server extension, at the top level and in
 * `data`): the request's `type`, and its `room` and `clientId` where it had them.
 */
export interface ErrorAbout {
  requestType?: string;
  room?: string;
  clientId?: string;
  /** the recipient of a refused `dm` */
  to?: UserId;
  /** the other user of a refused `dm_history` */
  with?: UserId;
}
export interface ErrorFrame extends ErrorAbout {
  type: 'error';
  message: string;
  code: ErrorCode;
  data?: { message: string; code: ErrorCode } & ErrorAbout;
}
export interface JoinAckFrame {
  type: 'join_ack';
  room: string;
  /** `online` (extension): how many users are online in the room; `users` may list fewer of them */
  data: { room: string; status: 'ok'; users: UserRef[]; online?: number; members?: number; owner?: UserId };
}
export interface LeftFrame {
  type: 'left';
  room: string;
  /** "removed": the room's owner ended the membership (absent: the user left) */
  reason?: string;
}
/** I was made a member of a room by another member (§8); its `join_ack` follows. */
export interface InvitedFrame {
  type: 'invited';
  room: string;
  data: { room: string; private: boolean; description: string; by: UserRef | null };
}
export interface MyRoomsFrame {
  type: 'my_rooms';
  data: MemberRoom[];
}
export interface UsersFrame {
  type: 'users';
  data: UserInfo[];
}
export interface PresenceFrame {
  type: 'presence';
  room: string;
  data: { event: 'join' | 'leave'; userId: UserId; username: string };
}
export interface TypingEventFrame {
  type: 'typing';
  room: string;
  data: UserRef;
}
export interface RoomsFrame {
  type: 'rooms';
  data: RoomInfo[];
}
export interface PongFrame {
  type: 'pong';
}
/** Extension: answer to `conversations`. */
export interface ConversationsFrame {
  type: 'conversations';
  data: ConversationInfo[];
}

export type ServerFrame =
  | WelcomeFrame
  | MessageFrame
  | DmFrame
  | DmSentFrame
  | RoomHistoryFrame
  | DmHistoryFrame
  | ErrorFrame
  | JoinAckFrame
  | LeftFrame
  | PresenceFrame
  | TypingEventFrame
  | RoomsFrame
  | PongFrame
  | ConversationsFrame
  | InvitedFrame
  | MyRoomsFrame
  | UsersFrame
  | DmTypingEventFrame
  | EventServerFrame;

export type ServerFrameType = ServerFrame['type'];

const SERVER_TYPES: ReadonlySet<string> = new Set<ServerFrameType>([
  'welcome',
  'message',
  'dm',
  'dm_sent',
  'room_history',
  'dm_history',
  'error',
  'join_ack',
  'left',
  'presence',
  'typing',
  'rooms',
  'pong',
  'conversations',
  'invited',
  'my_rooms',
  'users',
]);

// ---------------------------------------------------------------------------
// Limits (§4) the client checks before sending, so that a frame the server would refuse
// never sits in the outbox forever.
// ---------------------------------------------------------------------------

export const MAX_CONTENT_LENGTH = 4000;
export const MAX_CLIENT_ID_LENGTH = 64;
export const ROOM_NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;
export const HISTORY_PAGE_MAX = 200;

export function isValidRoomName(room: string): boolean {
  return ROOM_NAME_RE.test(room);
}

/**
 * What the server counts as blank: whitespace (Python's str.isspace(), which also counts the
 * separators U+001C–U+001F and U+0085 that JavaScript's \s does not) and invisible format
 * characters (category Cf: a zero-width space, a word joiner, a soft hyphen, a BOM…).
 */
const BLANK_RE = /^[\s\p{Cf}\u001c-\u001f\u0085]*$/u;
/** A UTF-16 surrogate without its other half: JSON the server cannot read (`bad_json`). */
const LONE_SURROGATE_RE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Whether the server would refuse `content` as blank: it shows nothing. */
export function isBlank(content: string): boolean {
  return BLANK_RE.test(content);
}

/** Returns a human readable reason when `content` would be refused by the server, else null. */
export function contentProblem(content: string): string | null {
  if (typeof content !== 'string') return 'content must be a string';
  if (isBlank(content)) return 'message is empty';
  if (content.includes('\u0000')) return 'message contains a NUL character';
  if (LONE_SURROGATE_RE.test(content)) return 'message contains a broken character (half of an emoji?)';
  // The server counts characters (code points), not UTF-16 units.
  if ([...content].length > MAX_CONTENT_LENGTH) {
    return `message is longer than ${MAX_CONTENT_LENGTH} characters`;
  }
  return null;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The fields a room message and a DM have alike, checked in one place so the two cannot drift apart. */
function hasMessageFields(v: unknown): v is Record<string, unknown> & Pick<RoomMessage, 'id' | 'fromUser' | 'content'> {
  return isObject(v) && typeof v.id === 'number' && typeof v.fromUser === 'number' && typeof v.content === 'string';
}

function isRoomMessage(v: unknown): v is RoomMessage {
  return hasMessageFields(v) && typeof v.room === 'string';
}

function isDirectMessage(v: unknown): v is DirectMessage {
  return hasMessageFields(v) && typeof v.to === 'number';
}

/** The request an error names, from the top level or from `data` (absent on older servers). */
function errorAbout(v: Record<string, unknown>): ErrorAbout {
  const d: Record<string, unknown> = isObject(v.data) ? v.data : {};
  const about: ErrorAbout = {};
  for (const key of ['requestType', 'room', 'clientId'] as const) {
    const value = typeof v[key] === 'string' ? v[key] : d[key];
    if (typeof value === 'string') about[key] = value;
  }
  for (const key of ['to', 'with'] as const) {
    const value = typeof v[key] === 'number' ? v[key] : d[key];
    if (typeof value === 'number' && Number.isInteger(value)) about[key] = value;
  }
  return about;
}

function parseConversation(v: unknown): ConversationInfo | null {
  if (!isObject(v) || typeof v.userId !== 'number') return null;
  return {
    userId: v.userId,
    username: typeof v.username === 'string' && v.username ? v.username : `user ${v.userId}`,
    lastId: typeof v.lastId === 'number' ? v.lastId : null,
    ...(readCountsOf(v) ? { read: readCountsOf(v)! } : {}),
  };
}

function parseMemberRoom(v: unknown): MemberRoom | null {
  if (!isObject(v) || typeof v.room !== 'string') return null;
  const read = readCountsOf(v);
  return { room: v.room, private: v.private === true, lastId: typeof v.lastId === 'number' ? v.lastId : 0, ...(read ? { read } : {}) };
}

function parseMemberRooms(v: unknown): MemberRoom[] {
  return Array.isArray(v) ? v.map(parseMemberRoom).filter((r): r is MemberRoom => r !== null) : [];
}

function parseUserInfo(v: unknown): UserInfo | null {
  if (!isObject(v) || typeof v.userId !== 'number') return null;
  const username = typeof v.username === 'string' && v.username ? v.username : `user ${v.userId}`;
  return { userId: v.userId, username, online: v.online === true };
}

function parseWelcome(v: Record<string, unknown>, d: Record<string, unknown>): WelcomeFrame {
  const data: WelcomeFrame['data'] = {
    userId: d.userId as number,
    username: typeof d.username === 'string' ? d.username : `user ${d.userId}`,
    serverTime: typeof d.serverTime === 'string' ? d.serverTime : '',
  };
  if (Array.isArray(d.rooms)) data.rooms = parseMemberRooms(d.rooms);
  if (Array.isArray(d.conversations)) {
    data.conversations = d.conversations.map(parseConversation).filter((c): c is ConversationInfo => c !== null);
  }
  return { ...(v as unknown as WelcomeFrame), data };
}

function parseInvited(v: Record<string, unknown>): InvitedFrame | null {
  const d: Record<string, unknown> = isObject(v.data) ? v.data : {};
  const room = typeof v.room === 'string' ? v.room : typeof d.room === 'string' ? d.room : null;
  if (room === null) return null;
  const by = isObject(d.by) && typeof d.by.userId === 'number' && typeof d.by.username === 'string' ? { userId: d.by.userId, username: d.by.username } : null;
  const description = typeof d.description === 'string' ? d.description : '';
  return { type: 'invited', room, data: { room, private: d.private === true, description, by } };
}

/**
 * Parses one text frame. Returns null for anything that is not a well-formed frame of a known
 * type (unknown types are ignored, as the protocol asks of clients).
 */
export function parseServerFrame(text: string): ServerFrame | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  if (!isObject(v) || typeof v.type !== 'string') return null;
  if (EVENT_SERVER_TYPES.has(v.type)) return parseEventFrame(v);
  if (!SERVER_TYPES.has(v.type)) return null;
  const d = v.data;
  switch (v.type as ServerFrameType) {
    case 'welcome':
      return isObject(d) && typeof d.userId === 'number' ? parseWelcome(v, d) : null;
    case 'message':
      return isRoomMessage(d) ? (v as unknown as MessageFrame) : null;
    case 'dm':
      return isDirectMessage(d) ? (v as unknown as DmFrame) : null;
    case 'dm_sent':
      return isObject(d) && isDirectMessage(d.message) ? (v as unknown as DmSentFrame) : null;
    case 'room_history':
      return typeof v.room === 'string' && Array.isArray(d) && d.every(isRoomMessage)
        ? (v as unknown as RoomHistoryFrame)
        : null;
    case 'dm_history':
      if (typeof v.with !== 'number' || !Array.isArray(d) || !d.every(isDirectMessage)) return null;
      return {
        ...(v as unknown as DmHistoryFrame),
        ...(v.events === undefined ? {} : { events: parseMessageEvents(v.events) }),
        ...(v.more === true ? { more: true } : {}),
      };
    case 'error': {
      // Existing clients read data.message; accept either place.
      const message =
        typeof v.message === 'string'
          ? v.message
          : isObject(d) && typeof d.message === 'string'
            ? d.message
            : 'unknown error';
      const code =
        typeof v.code === 'string' ? v.code : isObject(d) && typeof d.code === 'string' ? d.code : 'internal';
      const about = errorAbout(v);
      return { type: 'error', message, code, ...about, data: { message, code, ...about } };
    }
    case 'join_ack': {
      const room = typeof v.room === 'string' ? v.room : isObject(d) && typeof d.room === 'string' ? d.room : null;
      if (room === null) return null;
      const users = isObject(d) && Array.isArray(d.users) ? (d.users as unknown[]) : [];
      const online = isObject(d) && typeof d.online === 'number' && d.online >= 0 ? { online: d.online } : {};
      const members = isObject(d) && typeof d.members === 'number' && d.members >= 0 ? { members: d.members } : {};
      const owner = isObject(d) && typeof d.owner === 'number' && Number.isInteger(d.owner) ? { owner: d.owner } : {};
      return {
        type: 'join_ack',
        room,
        data: {
          room,
          status: 'ok',
          users: users.filter(
            (u): u is UserRef => isObject(u) && typeof u.userId === 'number' && typeof u.username === 'string',
          ),
          ...online,
          ...members,
          ...owner,
        },
      };
    }
    case 'left':
      if (typeof v.room !== 'string') return null;
      return typeof v.reason === 'string' ? { type: 'left', room: v.room, reason: v.reason } : { type: 'left', room: v.room };
    case 'invited':
      return parseInvited(v);
    case 'my_rooms':
      return Array.isArray(d) ? { type: 'my_rooms', data: parseMemberRooms(d) } : null;
    case 'users':
      return Array.isArray(d) ? { type: 'users', data: d.map(parseUserInfo).filter((u): u is UserInfo => u !== null) } : null;
    case 'presence':
      return typeof v.room === 'string' &&
        isObject(d) &&
        (d.event === 'join' || d.event === 'leave') &&
        typeof d.userId === 'number'
        ? (v as unknown as PresenceFrame)
        : null;
    case 'typing':
      if (typeof v.with === 'number' && isObject(d) && typeof d.userId === 'number') return v as unknown as DmTypingEventFrame;
      return typeof v.room === 'string' && isObject(d) && typeof d.userId === 'number'
        ? (v as unknown as TypingEventFrame)
        : null;
    case 'rooms':
      return Array.isArray(d) ? (v as unknown as RoomsFrame) : null;
    case 'pong':
      return { type: 'pong' };
    case 'conversations':
      return Array.isArray(d)
        ? { type: 'conversations', data: d.map(parseConversation).filter((c): c is ConversationInfo => c !== null) }
        : null;
  }
  return null;
}
