/**
 * Read state (protocol §9): up to which message each room and conversation was read, and how many
 * messages (and mentions of me) came after it. The server's counts (`welcome`, `conversations`,
 * the `read` event every device of mine gets) are taken as they are; messages arriving after them
 * are counted here, once each, until the server tells again.
 *
 * Pure: `(state, …) -> state`, `state` itself when nothing changes.
 */
import { conversationOf, dmKey, roomKey } from './conversation';
import { lastId } from './messageLists';
import { mentionsUser } from './mentions';
import type { ConversationsFrame, DirectMessage, MessageId, ReadCounts, ReadEventFrame, RoomMessage, WelcomeFrame } from './protocol';
import type { ChatState, ConversationKey, ReadMark } from './state';

function withMark(state: ChatState, key: ConversationKey, mark: ReadMark): ChatState {
  const old = state.reads[key];
  if (
    old &&
    old.lastReadId === mark.lastReadId &&
    old.unread === mark.unread &&
    old.mentions === mark.mentions &&
    old.countedUpTo === mark.countedUpTo
  ) {
    return state;
  }
  return { ...state, reads: { ...state.reads, [key]: mark } };
}

/** The newest message id `state` holds of a conversation (0: none). */
function newestLoaded(state: ChatState, key: ConversationKey): MessageId {
  const c = conversationOf(state, key);
  return (c && lastId<RoomMessage | DirectMessage>(c.messages)) ?? 0;
}

/** `welcome`: the read state of each of my rooms and conversations, counted up to their `lastId`. */
export function reduceWelcomeReads(state: ChatState, frame: WelcomeFrame): ChatState {
  let s = state;
  for (const r of frame.data.rooms ?? []) if (r.read) s = withServerCounts(s, roomKey(r.room), r.read, r.lastId);
  for (const c of frame.data.conversations ?? []) if (c.read) s = withServerCounts(s, dmKey(c.userId), c.read, c.lastId ?? 0);
  return s;
}

/** `conversations`: the read state of each conversation listed, counted up to its `lastId`. */
export function reduceConversationReads(state: ChatState, frame: ConversationsFrame): ChatState {
  let s = state;
  for (const c of frame.data) if (c.read) s = withServerCounts(s, dmKey(c.userId), c.read, c.lastId ?? 0);
  return s;
}

/**
 * `read`: the read state moved, on this device or another. Its counts include every message up to
 * `countedUpTo`, also one still on its way here (from another worker: counted again on arrival, it
 * made the badge one too high), and none after it, also one that came already (recounted here).
 * Without `countedUpTo` (older servers): what had reached this client when the frame came.
 */
export function reduceRead(state: ChatState, frame: ReadEventFrame): ChatState {
  const key = 'room' in frame ? roomKey(frame.room) : dmKey(frame.with);
  const bound = frame.data.countedUpTo;
  if (bound === undefined) return withServerCounts(state, key, frame.data, newestLoaded(state, key));
  const { lastReadId, unread, mentions } = frame.data;
  const upTo = Math.max(bound, lastReadId);
  const s = withMark(state, key, { lastReadId, unread, mentions, countedUpTo: upTo });
  const later = (conversationOf(s, key)?.messages ?? []).filter((m: RoomMessage | DirectMessage) => m.id > upTo);
  return withArrivals(s, key, later);
}

function withServerCounts(state: ChatState, key: ConversationKey, counts: ReadCounts, countedUpTo: MessageId): ChatState {
  const old = state.reads[key];
  const upTo = Math.max(countedUpTo, counts.lastReadId, old && old.lastReadId <= counts.lastReadId ? old.countedUpTo : 0);
  return withMark(state, key, { lastReadId: counts.lastReadId, unread: counts.unread, mentions: counts.mentions, countedUpTo: upTo });
}

/**
 * Messages that arrived live or with a replay / catch-up: those of others after the read mark and
 * after what the server's counts include are unread (and mentions when they name me). Counted once
 * each, whatever route they took.
 */
export function withArrivals(state: ChatState, key: ConversationKey, msgs: Array<RoomMessage | DirectMessage>): ChatState {
  const me = state.me;
  if (!me || msgs.length === 0) return state;
  const old = state.reads[key] ?? { lastReadId: 0, unread: 0, mentions: 0, countedUpTo: 0 };
  let { unread, mentions, countedUpTo } = old;
  for (const m of [...msgs].sort((a, b) => a.id - b.id)) {
    if (m.id <= countedUpTo || m.id <= old.lastReadId) continue;
    countedUpTo = m.id;
    if (m.fromUser === me.userId || m.deleted) continue;
    unread++;
    if (mentionsUser(m.content, me.username)) mentions++;
  }
  return withMark(state, key, { ...old, unread, mentions, countedUpTo });
}

/**
 * I read `key` up to `id` (the `read` frame is on its way): the counts are those of the loaded
 * messages after it, at once, rather than when the server's answer comes.
 */
export function withReadLocally(state: ChatState, key: ConversationKey, id: MessageId): ChatState {
  const old = state.reads[key];
  if (old && id <= old.lastReadId) return state;
  const me = state.me;
  const after = (conversationOf(state, key)?.messages ?? []).filter((m: RoomMessage | DirectMessage) => m.id > id && m.fromUser !== me?.userId && !m.deleted);
  return withMark(state, key, {
    lastReadId: id,
    unread: after.length,
    mentions: me ? after.filter((m) => mentionsUser(m.content, me.username)).length : 0,
    countedUpTo: Math.max(old?.countedUpTo ?? 0, id),
  });
}

/** Whether `key` has messages loaded after its read mark, i.e. a `read` up to `id` would move it. */
export function readWouldMove(state: ChatState, key: ConversationKey, id: MessageId): boolean {
  const old = state.reads[key];
  return !old || id > old.lastReadId;
}
