/**
 * Rooms and DM conversations as one thing, keyed `r:<room>` | `d:<userId>`: what applies to both
 * (finding one in the state, patching it, merging messages into it, trimming it) is written once here.
 *
 * Pure: none of these functions changes its arguments, and they return their input itself when
 * nothing changes, so that the state snapshot is only replaced when something did.
 */
import { capped, mergeById, trimmed } from './messageLists';
import type { DirectMessage, RoomMessage, UserId } from './protocol';
import { newDm } from './rooms';
import type { ChatState, Conversation, ConversationKey, DmState, PendingMessage, RoomState } from './state';

/** The key of a room's conversation. */
export function roomKey(room: string): ConversationKey {
  return `r:${room}`;
}

/** The key of the conversation with a user. */
export function dmKey(userId: UserId): ConversationKey {
  return `d:${userId}`;
}

/** What a key names: a room, or the user a DM conversation is with. */
export type ConversationRef = { kind: 'room'; room: string } | { kind: 'dm'; userId: UserId };

/** The room or user a key names; null for a string that is no conversation key. */
export function parseKey(key: string): ConversationRef | null {
  if (key.startsWith('r:') && key.length > 2) return { kind: 'room', room: key.slice(2) };
  if (key.startsWith('d:')) {
    const userId = Number(key.slice(2));
    if (key.length > 2 && Number.isInteger(userId)) return { kind: 'dm', userId };
  }
  return null;
}

/** The conversation an outbox entry belongs to. */
export function keyOfPending(p: Pick<PendingMessage, 'kind' | 'room' | 'to'>): ConversationKey {
  return p.kind === 'message' ? roomKey(p.room!) : dmKey(p.to!);
}

/** The room or conversation `key` names in `state`, if it is there. */
export function conversationOf(state: ChatState, key: ConversationKey): Conversation | undefined {
  const ref = parseKey(key);
  if (!ref) return undefined;
  return ref.kind === 'room' ? state.joined[ref.room] : state.dms[ref.userId];
}

/** `state` with the joined room `name` replaced by `fn(room)`; `state` itself when it is not joined or `fn` changes nothing. */
export function withRoom(state: ChatState, name: string, fn: (r: RoomState) => RoomState): ChatState {
  const r = state.joined[name];
  if (!r) return state;
  const next = fn(r);
  return next === r ? state : { ...state, joined: { ...state.joined, [name]: next } };
}

/**
 * `state` with the conversation with `userId` replaced by `fn(dm)`. A conversation not listed yet
 * is created (named `createAs`) when `createAs` is given; else `state` is returned as it is.
 */
export function withDm(state: ChatState, userId: UserId, fn: (d: DmState) => DmState, createAs?: string): ChatState {
  const current = state.dms[userId];
  if (!current && createAs === undefined) return state;
  const next = fn(current ?? newDm(userId, createAs!));
  return next === current ? state : { ...state, dms: { ...state.dms, [userId]: next } };
}

/** `withRoom` or `withDm` (never creating one), as the key says. */
export function withConversation(
  state: ChatState,
  key: ConversationKey,
  fn: <C extends Conversation>(c: C) => C,
): ChatState {
  const ref = parseKey(key);
  if (!ref) return state;
  return ref.kind === 'room' ? withRoom(state, ref.room, fn) : withDm(state, ref.userId, fn);
}

/**
 * `c` with `msgs` merged by id. New messages at its end drop the oldest beyond `maxMessages`
 * (`hasMore` then says they can be loaded again), unless its reader is `readingBack`.
 */
export function withMerged<C extends Conversation>(
  c: C,
  msgs: Array<RoomMessage | DirectMessage>,
  maxMessages: number,
  readingBack: boolean,
): C {
  const all = mergeById<RoomMessage | DirectMessage>(c.messages, msgs);
  if (all === c.messages) return c;
  const merged = readingBack ? all : capped<RoomMessage | DirectMessage>(c.messages, all, maxMessages);
  return { ...c, messages: merged, hasMore: merged !== all || c.hasMore };
}

/**
 * A conversation whose reader is back at its newest messages: without its oldest messages beyond
 * `maxMessages` (`hasMore`: they can be loaded again); `c` itself when it is short enough.
 */
export function backAtNewest<C extends Conversation>(c: C, maxMessages: number): C {
  const messages = trimmed<RoomMessage | DirectMessage>(c.messages, maxMessages);
  return messages === c.messages ? c : { ...c, messages, hasMore: true };
}

/** Those of `msgs` whose id is not among `before` (in their order): what a merge brought that is new. */
export function unseen<M extends { id: number }>(before: readonly M[], msgs: readonly M[]): M[] {
  const known = new Set(before.map((m) => m.id));
  return msgs.filter((m) => !known.has(m.id));
}
