/**
 * The reducers of protocol v2 §9–§11 frames (src/readState.ts, src/eventReducers.ts): read state,
 * edits, deletes, reactions, search answers and DM typing, as plain functions.
 */
import { describe, expect, it } from 'vitest';
import {
  reduceDmTyping,
  reduceMessageDeleted,
  reduceMessageEdited,
  reduceReaction,
  reduceSearch,
  withDmTypingEnded,
  withDmTypingExpired,
  withSearchStarted,
} from '../src/eventReducers';
import { parseServerFrame, type DirectMessage, type RoomMessage } from '../src/protocol';
import { reduceConversationReads, reduceRead, reduceWelcomeReads, withArrivals, withReadLocally } from '../src/readState';
import { newDm, newRoom } from '../src/rooms';
import type { ChatState } from '../src/state';
import { ALICE as ME, BOB } from './harness';
import { openState } from './states';

const T = '2026-11-23T12:00:00.000000Z';

const rm = (id: number, from = BOB, content = `m${id}`, extra: Partial<RoomMessage> = {}): RoomMessage => ({
  id,
  fromUser: from.userId,
  username: from.username,
  content,
  timestamp: T,
  room: 'general',
  ...extra,
});
const dmsg = (id: number, from = BOB, to = ME.userId, content = `d${id}`): DirectMessage => ({
  id,
  fromUser: from.userId,
  username: from.username,
  to,
  content,
  timestamp: T,
});

/** Alice in #general and in a conversation with bob, both loaded with these messages. */
function state(messages: RoomMessage[] = [], dms: DirectMessage[] = []): ChatState {
  return openState({
    joined: { general: { ...newRoom('general'), status: 'joined', historyLoaded: true, hasMore: false, messages } },
    dms: { 2: { ...newDm(2, 'bob'), historyLoaded: true, messages: dms } },
    users: { 1: ME, 2: BOB },
  });
}

/** A server frame, through the parser the client uses. */
function frame<T>(v: object): T {
  const f = parseServerFrame(JSON.stringify(v));
  expect(f).not.toBeNull();
  return f as T;
}

const welcome = (rooms: object[], conversations: object[] = []) =>
  frame<Parameters<typeof reduceWelcomeReads>[1]>({ type: 'welcome', data: { userId: 1, username: 'alice', serverTime: T, rooms, conversations } });

describe('read state (§9)', () => {
  it('takes the counts of welcome, counted up to each lastId: replayed messages are not counted again', () => {
    let s = reduceWelcomeReads(
      state(),
      welcome(
        [{ room: 'general', private: false, lastId: 5, lastReadId: 3, unread: 2, mentions: 1 }],
        [{ userId: 2, username: 'bob', lastId: 4, lastReadId: 0, unread: 1, mentions: 0 }],
      ),
    );
    expect(s.reads['r:general']).toEqual({ lastReadId: 3, unread: 2, mentions: 1, countedUpTo: 5 });
    expect(s.reads['d:2']).toEqual({ lastReadId: 0, unread: 1, mentions: 0, countedUpTo: 4 });
    // the replay after join since=3 brings 4 and 5 (counted already), then 6 and 7 arrive live
    s = withArrivals(s, 'r:general', [rm(4), rm(5, BOB, '@alice look')]);
    expect(s.reads['r:general'].unread).toBe(2);
    s = withArrivals(s, 'r:general', [rm(6, BOB, 'hey @Alice!'), rm(7, ME)]);
    expect(s.reads['r:general']).toEqual({ lastReadId: 3, unread: 3, mentions: 2, countedUpTo: 7 });
    // the same message again (a replay after a reconnection) counts once
    const again = withArrivals(s, 'r:general', [rm(6, BOB, 'hey @Alice!')]);
    expect(again).toBe(s);
  });

  it('follows the read event of another device and counts on from what had arrived', () => {
    let s = withArrivals(state([rm(1), rm(2)]), 'r:general', [rm(1), rm(2)]);
    expect(s.reads['r:general'].unread).toBe(2);
    s = reduceRead(s, frame({ type: 'read', room: 'general', data: { lastReadId: 2, unread: 0, mentions: 0 } }));
    expect(s.reads['r:general']).toEqual({ lastReadId: 2, unread: 0, mentions: 0, countedUpTo: 2 });
    s = withArrivals(s, 'r:general', [rm(3, BOB, '@room news')]);
    expect(s.reads['r:general']).toMatchObject({ unread: 1, mentions: 1 });
    s = reduceRead(s, frame({ type: 'read', with: 2, data: { lastReadId: 9, unread: 0, mentions: 0 } }));
    expect(s.reads['d:2'].lastReadId).toBe(9);
  });

  it('does not count twice a message the read counts include that arrives after them (countedUpTo)', () => {
    // read up to 2 while 3 was stored on another worker: the server counted it, its frame comes after
    let s = withArrivals(state([rm(1), rm(2)]), 'r:general', [rm(1), rm(2)]);
    s = reduceRead(s, frame({ type: 'read', room: 'general', data: { lastReadId: 2, unread: 1, mentions: 1, countedUpTo: 3 } }));
    s = withArrivals(s, 'r:general', [rm(3, BOB, '@room late')]);
    expect(s.reads['r:general']).toEqual({ lastReadId: 2, unread: 1, mentions: 1, countedUpTo: 3 });
    // the next one is news
    s = withArrivals(s, 'r:general', [rm(4)]);
    expect(s.reads['r:general'].unread).toBe(2);
  });

  it('counts on top of the read counts a message that came before them but after what they include', () => {
    // 3 arrived (counted), then the answer of a read counted up to 2 only: 3 is not in its counts
    let s = withArrivals(state([rm(1), rm(2), rm(3, BOB, 'hi @alice')]), 'r:general', [rm(1), rm(2), rm(3, BOB, 'hi @alice')]);
    s = reduceRead(s, frame({ type: 'read', room: 'general', data: { lastReadId: 2, unread: 0, mentions: 0, countedUpTo: 2 } }));
    expect(s.reads['r:general']).toEqual({ lastReadId: 2, unread: 1, mentions: 1, countedUpTo: 3 });
  });

  it('reading locally clears the counts at once; reading an older id changes nothing', () => {
    let s = withArrivals(state([rm(1), rm(2, BOB, '@alice')]), 'r:general', [rm(1), rm(2, BOB, '@alice')]);
    s = withReadLocally(s, 'r:general', 2);
    expect(s.reads['r:general']).toEqual({ lastReadId: 2, unread: 0, mentions: 0, countedUpTo: 2 });
    expect(withReadLocally(s, 'r:general', 1)).toBe(s);
  });

  it('takes the counts of the conversations list', () => {
    const s = reduceConversationReads(
      state(),
      frame({ type: 'conversations', data: [{ userId: 2, username: 'bob', lastId: 8, lastReadId: 6, unread: 2, mentions: 1 }] }),
    );
    expect(s.reads['d:2']).toEqual({ lastReadId: 6, unread: 2, mentions: 1, countedUpTo: 8 });
  });
});

describe('edits, deletes, reactions (§10)', () => {
  it('an edit replaces the message in place and is remembered as the last event seen', () => {
    const s0 = state([rm(1), rm(2)]);
    const s = reduceMessageEdited(s0, frame({ type: 'message_edited', eventId: 5, data: rm(1, BOB, 'fixed', { editedAt: T }) }));
    expect(s.joined.general.messages.map((m) => [m.id, m.content, m.editedAt])).toEqual([
      [1, 'fixed', T],
      [2, 'm2', undefined],
    ]);
    expect(s.joined.general.lastEventId).toBe(5);
    // an event seen already (a resend answered with its original eventId) is dropped
    expect(reduceMessageEdited(s, frame({ type: 'message_edited', eventId: 5, data: rm(1, BOB, 'fixed') }))).toBe(s);
  });

  it('an edit of a DM lands in its conversation, sent or received', () => {
    const s = reduceMessageEdited(
      state([], [dmsg(3), dmsg(4, ME, 2)]),
      frame({ type: 'message_edited', eventId: 6, data: { ...dmsg(4, ME, 2, 'mine, edited'), editedAt: T } }),
    );
    expect(s.dms[2].messages[1].content).toBe('mine, edited');
    expect(s.dms[2].lastEventId).toBe(6);
  });

  it('a delete leaves a tombstone without content or reactions', () => {
    const s = reduceMessageDeleted(
      state([rm(1, BOB, 'secret', { reactions: { '👍': [1] } })]),
      frame({ type: 'message_deleted', eventId: 7, data: { id: 1, room: 'general', fromUser: 2 } }),
    );
    const m = s.joined.general.messages[0];
    expect(m).toMatchObject({ id: 1, content: '', deleted: true });
    expect(m.reactions).toBeUndefined();
    expect(s.joined.general.lastEventId).toBe(7);
  });

  it('reactions go on and off, once per user and emoji, found in whichever conversation holds the message', () => {
    const react = (eventId: number, userId: number, on: boolean, emoji = '👍', id = 1) =>
      frame<Parameters<typeof reduceReaction>[1]>({ type: 'reaction', eventId, data: { id, emoji, userId, username: userId === 1 ? 'alice' : 'bob', on } });
    let s = state([rm(1)], [dmsg(2)]);
    s = reduceReaction(s, react(3, 1, true));
    s = reduceReaction(s, react(4, 2, true));
    s = reduceReaction(s, react(5, 2, true, '🎉'));
    expect(s.joined.general.messages[0].reactions).toEqual({ '👍': [1, 2], '🎉': [2] });
    // the same reaction replayed with a later id (a resume) changes nothing
    expect(reduceReaction(s, react(6, 2, true)).joined.general.messages[0].reactions).toEqual({ '👍': [1, 2], '🎉': [2] });
    s = reduceReaction(s, react(7, 1, false));
    s = reduceReaction(s, react(8, 2, false, '🎉'));
    expect(s.joined.general.messages[0].reactions).toEqual({ '👍': [2] });
    s = reduceReaction(s, react(9, 2, false));
    expect(s.joined.general.messages[0].reactions).toBeUndefined();
    s = reduceReaction(s, react(10, 2, true, '❤️', 2));
    expect(s.dms[2].messages[0].reactions).toEqual({ '❤️': [2] });
    expect(s.dms[2].lastEventId).toBe(10);
  });
});

describe('search (§11) and DM typing', () => {
  it('keeps the answer of the latest search only', () => {
    let s = withSearchStarted(state(), 'release');
    expect(s.search).toEqual({ query: 'release', results: null });
    expect(reduceSearch(s, frame({ type: 'search', query: 'older', data: [rm(1)] }))).toBe(s);
    s = reduceSearch(s, frame({ type: 'search', query: 'release', data: [rm(9, BOB, 'release notes'), dmsg(4)] }));
    expect(s.search?.results?.map((m) => m.id)).toEqual([9, 4]);
  });

  it('shows the other user typing in our conversation until their DM comes, or it expires', () => {
    const typing = frame<Parameters<typeof reduceDmTyping>[1]>({ type: 'typing', with: 2, data: { userId: 2, username: 'bob' } });
    let s = reduceDmTyping(state(), typing);
    expect(s.dms[2].typing).toEqual([BOB]);
    expect(reduceDmTyping(s, typing)).toBe(s);
    expect(withDmTypingEnded(s, 2).dms[2].typing).toEqual([]);
    expect(withDmTypingExpired(s, (peer) => peer === 2).dms[2].typing).toEqual([]);
    // a conversation not listed yet is made for it
    s = reduceDmTyping(state(), frame({ type: 'typing', with: 3, data: { userId: 3, username: 'carol' } }));
    expect(s.dms[3].typing).toEqual([{ userId: 3, username: 'carol' }]);
  });
});
