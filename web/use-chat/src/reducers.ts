/**
 * One pure reducer per server frame type: `(state, frame, env) -> state`, what the frame changes
 * in the snapshot and nothing else. No I/O, no timers, no callbacks: what a frame makes the client
 * send or schedule is done by the client (client.ts) and the history module (history.ts) around
 * these calls. `env` holds the facts a frame's effect depends on that are not in the snapshot.
 * A reducer returns `state` itself when the frame changes nothing.
 */
import { conversationOf, dmKey, roomKey, withConversation, withDm, withMerged, withRoom } from './conversation';
import { reachesBack, withoutHole } from './messageLists';
import type {
  ConversationsFrame,
  DirectMessage,
  DmFrame,
  DmHistoryFrame,
  DmSentFrame,
  JoinAckFrame,
  LeftFrame,
  MessageFrame,
  MessageId,
  PresenceFrame,
  RoomHistoryFrame,
  RoomMessage,
  RoomsFrame,
  TypingEventFrame,
  UserId,
  UserRef,
  WelcomeFrame,
} from './protocol';
import { dedupeUsers, newDm, newRoom, onlineAfter, withListedUsers, withOnlineCounts, withPrivacy, withRoomOnline } from './rooms';
import type { ChatState, ConversationKey, DmState, RoomState } from './state';

/** What the reducers need to know besides the snapshot. */
export interface ReduceEnv {
  /** see `ChatClientOptions.maxMessages` */
  maxMessages: number;
  /** conversations whose reader is away from the newest messages: nothing is dropped from them */
  readingBack: ReadonlySet<ConversationKey>;
}

/** The history request a page answers (`ref`: its `before` / `after` id), or STALE for one given up on. */
export type HistoryRequest = { kind: 'latest' | 'before' | 'after'; limit: number; ref?: MessageId; at: number };
/** What an answer to a request given up on is taken as: its messages are merged, nothing else. */
export const STALE = Object.freeze({ kind: 'stale', limit: 0, at: 0 } as const);
export type AnsweredRequest = HistoryRequest | typeof STALE;

// ----- shared steps ---------------------------------------------------------

/** `state` with `users` remembered in `users` (by id, the latest name). */
export function withUsers(state: ChatState, users: UserRef[]): ChatState {
  let all: Record<number, UserRef> | null = null;
  for (const u of users) {
    if (typeof u.userId !== 'number' || !u.username) continue;
    if ((all ?? state.users)[u.userId]?.username !== u.username) {
      all ??= { ...state.users };
      all[u.userId] = { userId: u.userId, username: u.username };
    }
  }
  return all ? { ...state, users: all } : state;
}

/** `state` without the outbox entries the server echoed back in `msgs` (with our clientId). */
export function withAcked(state: ChatState, msgs: Array<{ clientId?: string; fromUser: UserId }>): ChatState {
  if (!state.outbox.length) return state;
  const ids = new Set<string>();
  for (const m of msgs) if (m.clientId && (state.me === null || m.fromUser === state.me.userId)) ids.add(m.clientId);
  if (!ids.size) return state;
  const outbox = state.outbox.filter((p) => !ids.has(p.clientId));
  return outbox.length === state.outbox.length ? state : { ...state, outbox };
}

/** Room messages (live, replayed or a page) merged into their room; those who sent them stop typing. */
export function withRoomMessages(state: ChatState, room: string, msgs: RoomMessage[], env: ReduceEnv): ChatState {
  let s = withAcked(state, msgs);
  s = withUsers(
    s,
    msgs.map((m) => ({ userId: m.fromUser, username: m.username })),
  );
  const senders = new Set(msgs.map((m) => m.fromUser));
  return withRoom(s, room, (r) => {
    const merged = withMerged(r, msgs, env.maxMessages, env.readingBack.has(roomKey(room)));
    if (merged === r || !r.typing.some((t) => senders.has(t.userId))) return merged;
    return { ...merged, typing: r.typing.filter((t) => !senders.has(t.userId)) };
  });
}

/** The user a DM is with, as seen by `me`: its recipient when I sent it, else its sender. */
export function peerOf(m: DirectMessage, me: UserId | undefined): UserId {
  return m.fromUser === me ? m.to : m.fromUser;
}

/** DMs merged into their conversations (created when new): with `peer`, or else with whoever of sender and recipient is not me. */
export function withDms(state: ChatState, msgs: DirectMessage[], env: ReduceEnv, peer?: UserId): ChatState {
  let s = withAcked(state, msgs);
  const me = s.me?.userId;
  const byPeer = new Map<number, DirectMessage[]>();
  for (const m of msgs) {
    const p = peer ?? peerOf(m, me);
    if (m.fromUser !== me) s = withUsers(s, [{ userId: m.fromUser, username: m.username }]);
    const arr = byPeer.get(p) ?? [];
    arr.push(m);
    byPeer.set(p, arr);
  }
  for (const [p, arr] of byPeer) {
    const name = s.users[p]?.username ?? `user ${p}`;
    s = withDm(s, p, (d) => withMerged(d, arr, env.maxMessages, env.readingBack.has(dmKey(p))), name);
  }
  return s;
}

/**
 * A history page merged into its conversation (`key`), as the request it answers says: the latest
 * page (`historyLoaded`, `hasMore` from whether it was full), an older one (`hasMore`,
 * `loadingOlder`), or a catch-up `after` an id. An older page that no longer joins the messages
 * (those it was asked before were dropped meanwhile) is not merged: it would leave a hole.
 */
function withPage<M extends RoomMessage | DirectMessage>(
  state: ChatState,
  key: ConversationKey,
  page: M[],
  req: AnsweredRequest,
  merge: (s: ChatState) => ChatState,
): ChatState {
  if (req !== STALE && req.kind === 'before' && !reachesBack<RoomMessage | DirectMessage>(conversationOf(state, key)?.messages, req.ref)) {
    return withConversation(state, key, (c) => ({ ...c, loadingOlder: false }));
  }
  const s = merge(state);
  if (req === STALE) return s;
  const full = page.length >= req.limit;
  return withConversation(s, key, (c) => {
    if (req.kind === 'after') return c.historyLoaded ? c : { ...c, historyLoaded: true };
    return {
      ...c,
      messages: req.kind === 'latest' && !c.historyLoaded ? withoutHole<RoomMessage | DirectMessage>(c.messages, page, full) : c.messages,
      historyLoaded: true,
      hasMore: req.kind === 'before' || !c.historyLoaded ? full : c.hasMore,
      loadingOlder: req.kind === 'before' ? false : c.loadingOlder,
    };
  });
}

// ----- one reducer per frame type -------------------------------------------

/** `welcome`: authenticated, as this user. */
export function reduceWelcome(state: ChatState, frame: WelcomeFrame): ChatState {
  const me = { userId: frame.data.userId, username: frame.data.username };
  return withUsers({ ...state, status: 'open', me, nextRetryAt: null }, [me]);
}

/** `message`: a room message, live or replayed after a `join` with `since`. */
export function reduceMessage(state: ChatState, frame: MessageFrame, env: ReduceEnv): ChatState {
  return withRoomMessages(state, frame.data.room, [frame.data], env);
}

/** `dm`: a DM to me, or from me in another tab. */
export function reduceDm(state: ChatState, frame: DmFrame, env: ReduceEnv): ChatState {
  return withDms(state, [frame.data], env);
}

/** `dm_sent`: the server stored a DM of mine (it acknowledges the outbox entry). */
export function reduceDmSent(state: ChatState, frame: DmSentFrame, env: ReduceEnv): ChatState {
  return withDms(state, [frame.data.message], env);
}

/** `room_history`: a page of a room's messages, answering `req`. */
export function reduceRoomHistory(state: ChatState, frame: RoomHistoryFrame, env: ReduceEnv, req: AnsweredRequest): ChatState {
  return withPage(state, roomKey(frame.room), frame.data, req, (s) => withRoomMessages(s, frame.room, frame.data, env));
}

/** `dm_history`: a page of the conversation with a user, answering `req` (the conversation is listed if it was not). */
export function reduceDmHistory(state: ChatState, frame: DmHistoryFrame, env: ReduceEnv, req: AnsweredRequest): ChatState {
  const peer = frame.with;
  return withPage(state, dmKey(peer), frame.data, req, (s) => {
    const name = s.users[peer]?.username ?? frame.data.find((m) => m.fromUser === peer)?.username ?? `user ${peer}`;
    return withDms(
      withDm(s, peer, (d) => d, name),
      frame.data,
      env,
      peer,
    );
  });
}

/**
 * `join_ack`: a room joined, with who is online there; the rooms list counts it as the server just
 * did. A room not listed yet is added: my membership began on another device of mine (a join, a
 * room created there), or by an invitation.
 */
export function reduceJoinAck(state: ChatState, frame: JoinAckFrame): ChatState {
  const s = withUsers(state, frame.data.users);
  const users = dedupeUsers(frame.data.users);
  const online = frame.data.online === undefined ? null : Math.max(users.length, frame.data.online);
  const members = frame.data.members ?? null;
  const owner = frame.data.owner ?? null;
  const had = s.joined[frame.room] ?? newRoom(frame.room);
  const next = { ...s, joined: { ...s.joined, [frame.room]: { ...had, status: 'joined' as const, users, online, members, owner } } };
  const rooms = withRoomOnline(next.rooms, frame.room, online ?? users.length, true);
  const i = rooms.findIndex((r) => r.name === frame.room);
  if (i < 0 || (rooms[i].member !== false && members === null)) return { ...next, rooms };
  const patched = rooms.slice();
  patched[i] = { ...rooms[i], member: true, ...(members === null ? {} : { members }) };
  return { ...next, rooms: patched };
}

/**
 * `left`: `leave()` forgot the room already. Joined again since (leave, then join before this
 * ack), it stays counted (its join_ack counts it); else this user is no longer counted there.
 */
export function reduceLeft(state: ChatState, frame: LeftFrame): ChatState {
  const info = state.rooms.find((r) => r.name === frame.room);
  if (state.joined[frame.room] || !info || typeof info.online !== 'number' || info.online <= 0) return state;
  return { ...state, rooms: withRoomOnline(state.rooms, frame.room, info.online - 1) };
}

/**
 * `presence`: a user's first connection joined a room of ours, or their last one left it. Its
 * users, its online count and the rooms list's count change here, locally.
 */
export function reducePresence(state: ChatState, frame: PresenceFrame): ChatState {
  const u = { userId: frame.data.userId, username: frame.data.username };
  const s = withUsers(state, [u]);
  const r = s.joined[frame.room];
  if (!r) return s;
  const others = r.users.filter((x) => x.userId !== u.userId);
  const listed = others.length !== r.users.length;
  const join = frame.data.event === 'join';
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
  let rooms = s.rooms;
  const info = rooms.find((x) => x.name === frame.room);
  if (info && r.status === 'joined') {
    const counted = typeof info.online === 'number' ? info.online : r.users.length;
    rooms = withRoomOnline(rooms, frame.room, Math.max(users.length, counted + delta));
  }
  return { ...s, joined: { ...s.joined, [frame.room]: next }, rooms };
}

/** Whether a `typing` event shows: someone else's, in a room of ours. */
export function typingShows(state: ChatState, frame: TypingEventFrame): boolean {
  return frame.data.userId !== state.me?.userId && !!state.joined[frame.room];
}

/** `typing`: someone else is typing in a room of ours (the client expires it after `typingTtlMs`). */
export function reduceTyping(state: ChatState, frame: TypingEventFrame): ChatState {
  if (!typingShows(state, frame)) return state;
  const u = { userId: frame.data.userId, username: frame.data.username };
  return withRoom(withUsers(state, [u]), frame.room, (r) =>
    r.typing.some((x) => x.userId === u.userId) ? r : { ...r, typing: [...r.typing, u] },
  );
}

/** `rooms`: the rooms list; joined rooms take its online counts and whether they are private, and it counts at least the users they list. */
export function reduceRooms(state: ChatState, frame: RoomsFrame): ChatState {
  const rooms = frame.data.filter((r) => r && typeof r.name === 'string');
  const joined = withPrivacy(withOnlineCounts(state.joined, rooms), rooms);
  return { ...state, rooms: withListedUsers(rooms, joined), joined };
}

/** `conversations`: my DM partners, each listed in `dms` with the id of its newest message. */
export function reduceConversations(state: ChatState, frame: ConversationsFrame): ChatState {
  const s = withUsers(
    state,
    frame.data.map((c) => ({ userId: c.userId, username: c.username })),
  );
  const dms: Record<number, DmState> = { ...s.dms };
  for (const c of frame.data) {
    const d = dms[c.userId] ?? newDm(c.userId, c.username);
    dms[c.userId] = { ...d, username: c.username, listedLastId: c.lastId };
  }
  return { ...s, dms };
}

// ----- not a frame: the connection went away --------------------------------

/** What was tied to the socket that went away is reset; messages, conversations and the outbox are kept. */
export function reduceDisconnected(state: ChatState): ChatState {
  // Nothing is in flight any more: whatever was sent must be sent again on the next connection.
  const outbox = state.outbox.map((p) => (p.status === 'sent' ? { ...p, status: 'queued' as const } : p));
  const joined: Record<string, RoomState> = {};
  for (const [k, r] of Object.entries(state.joined)) {
    joined[k] = { ...r, status: 'joining', typing: [], users: [], online: null, loadingOlder: false };
  }
  const dms: Record<number, DmState> = {};
  for (const [k, d] of Object.entries(state.dms)) dms[Number(k)] = d.loadingOlder ? { ...d, loadingOlder: false } : d;
  return { ...state, outbox, joined, dms };
}
