/**
 * Reducers of the §10 event frames (`message_edited`, `message_deleted`, `reaction`), of `search`
 * answers and of DM typing. Events change messages in place; each carries an `eventId` from the
 * message id sequence, remembered per conversation (`lastEventId`) so that a `join` with `since`
 * resumes after the last message *or* event seen, and an event seen already is dropped.
 *
 * Pure: `(state, frame) -> state`, `state` itself when nothing changes.
 */
import { conversationOf, dmKey, roomKey, withConversation, withDm } from './conversation';
import type {
  DirectMessage,
  DmTypingEventFrame,
  MessageDeletedFrame,
  MessageEditedFrame,
  MessageEventFrame,
  MessageId,
  ReactionFrame,
  RoomMessage,
  SearchFrame,
  UserId,
} from './protocol';
import type { ChatState, Conversation, ConversationKey } from './state';

type Msg = RoomMessage | DirectMessage;

/** The index of message `id` in the id-sorted `list`, -1 when it is not there. */
export function indexOfId(list: readonly Msg[], id: MessageId): number {
  let lo = 0;
  let hi = list.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (list[mid].id === id) return mid;
    if (list[mid].id < id) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

/** The conversation a DM belongs to, as seen by me. */
function dmKeyOf(m: { fromUser: UserId; to?: UserId }, me: UserId | undefined): ConversationKey {
  return dmKey(m.fromUser === me ? m.to! : m.fromUser);
}

/**
 * `state` with event `eventId` applied to message `id` of `key` by `fn` (the message stays as it is
 * when it is not loaded), and the event remembered; `state` itself for an event seen already.
 */
function withEvent(state: ChatState, key: ConversationKey, eventId: MessageId, id: MessageId, fn: (m: Msg) => Msg): ChatState {
  const c = conversationOf(state, key);
  if (!c || (c.lastEventId ?? 0) >= eventId) return state;
  return withConversation(state, key, <C extends Conversation>(conv: C): C => {
    const i = indexOfId(conv.messages, id);
    let messages = conv.messages;
    if (i >= 0) {
      const next = fn(conv.messages[i]);
      if (next !== conv.messages[i]) {
        messages = conv.messages.slice() as C['messages'];
        messages[i] = next;
      }
    }
    return { ...conv, messages, lastEventId: eventId };
  });
}

/** `message_edited`: the message as edited (its data replaces what was shown). */
export function reduceMessageEdited(state: ChatState, frame: MessageEditedFrame): ChatState {
  const d = frame.data;
  const key = 'room' in d && typeof d.room === 'string' ? roomKey(d.room) : dmKeyOf(d as DirectMessage, state.me?.userId);
  return withEvent(state, key, frame.eventId, d.id, () => ({ ...d }));
}

/** `message_deleted`: a tombstone in the message's place (no content, no reactions). */
export function reduceMessageDeleted(state: ChatState, frame: MessageDeletedFrame): ChatState {
  const d = frame.data;
  const key = typeof d.room === 'string' ? roomKey(d.room) : dmKeyOf({ fromUser: d.fromUser, to: d.to }, state.me?.userId);
  return withEvent(state, key, frame.eventId, d.id, (m) => {
    if (m.deleted) return m;
    const { reactions: _gone, ...rest } = m;
    return { ...rest, content: '', deleted: true } as Msg;
  });
}

/** `reactions` with `userId`'s `emoji` on or off; the same object when nothing changes. */
export function withReaction(
  reactions: Record<string, UserId[]> | undefined,
  emoji: string,
  userId: UserId,
  on: boolean,
): Record<string, UserId[]> | undefined {
  const who = reactions?.[emoji] ?? [];
  if (who.includes(userId) === on) return reactions;
  const next = { ...reactions };
  const list = on ? [...who, userId] : who.filter((u) => u !== userId);
  if (list.length) next[emoji] = list;
  else delete next[emoji];
  return Object.keys(next).length ? next : undefined;
}

/**
 * `reaction`: a user's reaction on or off. The frame names the message only: it is looked for in
 * every room and conversation loaded (a message not loaded shows its reactions when it is).
 */
export function reduceReaction(state: ChatState, frame: ReactionFrame): ChatState {
  const d = frame.data;
  const keys: ConversationKey[] = [
    ...Object.keys(state.joined).map((r) => roomKey(r)),
    ...Object.keys(state.dms).map((u) => dmKey(Number(u))),
  ];
  const key = keys.find((k) => indexOfId(conversationOf(state, k)!.messages, d.id) >= 0);
  if (!key) return state;
  let s = state;
  if (d.username && s.users[d.userId]?.username !== d.username) {
    s = { ...s, users: { ...s.users, [d.userId]: { userId: d.userId, username: d.username } } };
  }
  return withEvent(s, key, frame.eventId, d.id, (m) => {
    if (m.deleted) return m;
    const reactions = withReaction(m.reactions, d.emoji, d.userId, d.on);
    if (reactions === m.reactions) return m;
    const { reactions: _old, ...rest } = m;
    return (reactions ? { ...rest, reactions } : rest) as Msg;
  });
}

/** Any of the §10 frames that change a message. */
export function reduceMessageEvent(state: ChatState, frame: MessageEventFrame): ChatState {
  if (frame.type === 'message_edited') return reduceMessageEdited(state, frame);
  if (frame.type === 'message_deleted') return reduceMessageDeleted(state, frame);
  return reduceReaction(state, frame);
}

/**
 * The DM partner whose conversation an event is about; undefined for a room's event, and for a
 * reaction to a message not loaded in any conversation (the frame names the message only).
 */
export function dmPeerOfEvent(state: ChatState, frame: MessageEventFrame): UserId | undefined {
  const me = state.me?.userId;
  if (frame.type === 'reaction') {
    return Object.values(state.dms).find((d) => indexOfId(d.messages, frame.data.id) >= 0)?.userId;
  }
  const d: { fromUser: UserId; to?: UserId } = frame.data;
  if (typeof d.to !== 'number') return undefined;
  return d.fromUser === me ? d.to : d.fromUser;
}

/** A search was asked for: its results are on their way. */
export function withSearchStarted(state: ChatState, query: string): ChatState {
  return { ...state, search: { query, results: null } };
}

/** `search`: the results of the latest search (the answer to an earlier one is ignored). */
export function reduceSearch(state: ChatState, frame: SearchFrame): ChatState {
  if (!state.search || state.search.query !== frame.query) return state;
  return { ...state, search: { query: frame.query, results: frame.data } };
}

/** `typing` with `with`: the other user of a DM conversation types to me (the client expires it). */
export function reduceDmTyping(state: ChatState, frame: DmTypingEventFrame): ChatState {
  if (frame.data.userId === state.me?.userId) return state;
  const u = { userId: frame.data.userId, username: frame.data.username };
  return withDm(state, frame.with, (d) => (d.typing.some((x) => x.userId === u.userId) ? d : { ...d, typing: [...d.typing, u] }), u.username);
}

/** DM typing shown longer than its time: gone. `expired` says whose typing ended. */
export function withDmTypingExpired(state: ChatState, expired: (peer: UserId) => boolean): ChatState {
  let s = state;
  for (const d of Object.values(state.dms)) {
    if (d.typing.length && expired(d.userId)) s = withDm(s, d.userId, (x) => ({ ...x, typing: [] }));
  }
  return s;
}

/** A DM arrived: its sender no longer types. */
export function withDmTypingEnded(state: ChatState, from: UserId): ChatState {
  const d = state.dms[from];
  if (!d || !d.typing.length) return state;
  return withDm(state, from, (x) => ({ ...x, typing: [] }));
}
