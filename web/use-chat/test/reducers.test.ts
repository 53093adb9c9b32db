/**
 * The pure reducers, one per server frame type (src/reducers.ts), and the conversation helpers
 * they are built on (src/conversation.ts): state in, frame in, state out; no socket, no timers.
 */
import { describe, expect, it } from 'vitest';
import { backAtNewest, keyOfPending, parseKey, withMerged } from '../src/conversation';
import { takeAnswered } from '../src/history';
import {
  reduceConversations,
  reduceDisconnected,
  reduceDm,
  reduceDmHistory,
  reduceDmSent,
  reduceJoinAck,
  reduceLeft,
  reduceMessage,
  reducePresence,
  reduceRoomHistory,
  reduceRooms,
  reduceTyping,
  reduceWelcome,
  STALE,
  type AnsweredRequest,
  type HistoryRequest,
  type ReduceEnv,
} from '../src/reducers';
import { newDm, newRoom } from '../src/rooms';
import type { ChatState, ConversationKey, PendingMessage, RoomState } from '../src/state';
import { parseServerFrame, type DirectMessage, type JoinAckFrame, type RoomMessage } from '../src/protocol';
import { ALICE as ME, BOB } from './harness';
import { openState } from './states';

const CAROL = { userId: 3, username: 'carol' };

function env(maxMessages = 100, readingBack: ConversationKey[] = []): ReduceEnv {
  return { maxMessages, readingBack: new Set(readingBack) };
}

function room(name: string, patch: Partial<RoomState> = {}): RoomState {
  return { ...newRoom(name), ...patch };
}

/** Alice in #general, joined with its history loaded; then `patch`. */
function state(patch: Partial<ChatState> = {}): ChatState {
  return openState({ joined: { general: room('general', { status: 'joined', historyLoaded: true, hasMore: false }) }, ...patch });
}

function rm(id: number, from = BOB, extra: Partial<RoomMessage> = {}): RoomMessage {
  return { id, fromUser: from.userId, username: from.username, content: `m${id}`, timestamp: 't', room: 'general', ...extra };
}

function dm(id: number, from: { userId: number; username: string }, to: number, extra: Partial<DirectMessage> = {}): DirectMessage {
  return { id, fromUser: from.userId, username: from.username, to, content: `d${id}`, timestamp: 't', ...extra };
}

function pending(clientId: string, patch: Partial<PendingMessage> = {}): PendingMessage {
  return { clientId, kind: 'message', room: 'general', content: 'x', createdAt: 0, attempts: 1, lastSentAt: 0, status: 'sent', ...patch };
}

const ids = (list: Array<{ id: number }>) => list.map((m) => m.id);
const req = (kind: HistoryRequest['kind'], ref?: number, limit = 3): HistoryRequest => ({ kind, ref, limit, at: 0 });

describe('conversation keys', () => {
  it.each([
    ['r:general', { kind: 'room', room: 'general' }],
    ['r:a:b', { kind: 'room', room: 'a:b' }],
    ['d:42', { kind: 'dm', userId: 42 }],
    ['d:', null],
    ['d:x', null],
    ['d:1.5', null],
    ['r:', null],
    ['general', null],
  ])('parseKey(%s)', (key, expected) => {
    expect(parseKey(key)).toEqual(expected);
  });

  it('names the conversation of an outbox entry', () => {
    expect(keyOfPending({ kind: 'message', room: 'general' })).toBe('r:general');
    expect(keyOfPending({ kind: 'dm', to: 7 })).toBe('d:7');
  });

  it.each([
    // [existing ids, incoming ids, maxMessages, readingBack, expected ids, hasMore]
    [[1, 2, 3], [4], 3, false, [2, 3, 4], true],
    [[1, 2, 3], [4], 3, true, [1, 2, 3, 4], false],
    [[2, 3, 4], [1], 3, false, [1, 2, 3, 4], false], // an older page is kept whole
    [[1, 2], [2], 3, false, [1, 2], false], // nothing new: the same conversation
  ])('withMerged(%j + %j, max %i, readingBack %s)', (have, incoming, max, readingBack, expected, hasMore) => {
    const c = room('general', { messages: have.map((i) => rm(i)), hasMore: false });
    const next = withMerged(c, incoming.map((i) => rm(i)), max, readingBack);
    expect(ids(next.messages)).toEqual(expected);
    expect(next.hasMore).toBe(hasMore);
    if (incoming.every((i) => have.includes(i))) expect(next).toBe(c);
  });

  it('backAtNewest trims a room and a conversation alike, and keeps a short one as it is', () => {
    const r = room('general', { messages: [1, 2, 3, 4].map((i) => rm(i)), hasMore: false });
    const d = { ...newDm(2, 'bob'), messages: [1, 2, 3, 4].map((i) => dm(i, BOB, 1)), hasMore: false };
    expect(ids(backAtNewest(r, 2).messages)).toEqual([3, 4]);
    expect(backAtNewest(r, 2).hasMore).toBe(true);
    expect(ids(backAtNewest(d, 3).messages)).toEqual([2, 3, 4]);
    expect(backAtNewest(d, 4)).toBe(d);
  });
});

describe('takeAnswered: which request a history page answers', () => {
  it.each([
    // [waiting, echo, answered, left waiting]
    [[req('latest'), req('before', 10)], {}, req('latest'), [req('before', 10)]], // no echo: in order
    [[req('latest'), req('before', 10)], { limit: 3, before: 10 }, req('before', 10), [req('latest')]],
    [[req('after', 5)], { limit: 2, after: 5 }, req('after', 5), []], // capped limit: still this one
    [[req('before', 10)], { limit: 3, before: 9 }, STALE, [req('before', 10)]], // given up on
    [[], { limit: 3 }, STALE, []],
  ] as Array<[HistoryRequest[], object, AnsweredRequest, HistoryRequest[]]>)('%j answered by %j', (q, echo, answered, left) => {
    expect(takeAnswered(q, echo)).toEqual(answered);
    expect(q).toEqual(left);
  });

  it('says nothing was asked when nothing waits and the server echoes nothing', () => {
    expect(takeAnswered(undefined, {})).toBeUndefined();
  });
});

describe('welcome', () => {
  it('opens the connection as this user and remembers them', () => {
    const s = reduceWelcome(state({ status: 'connecting', me: null, users: {}, nextRetryAt: 5 }), {
      type: 'welcome',
      data: { userId: 1, username: 'alice', serverTime: 't' },
    });
    expect(s).toMatchObject({ status: 'open', me: ME, nextRetryAt: null, users: { 1: ME } });
  });
});

describe('message', () => {
  it('merges a room message, remembers its sender and stops them typing', () => {
    const s0 = state();
    s0.joined.general = { ...s0.joined.general, typing: [BOB, CAROL] };
    const s = reduceMessage(s0, { type: 'message', data: rm(5) }, env());
    expect(ids(s.joined.general.messages)).toEqual([5]);
    expect(s.joined.general.typing).toEqual([CAROL]);
    expect(s.users[2]).toEqual(BOB);
  });

  it('acknowledges my outbox entry by its clientId, not one echoed from someone else', () => {
    const s0 = state({ outbox: [pending('c1'), pending('c2')] });
    const mine = reduceMessage(s0, { type: 'message', data: rm(5, ME, { clientId: 'c1' }) }, env());
    expect(mine.outbox.map((p) => p.clientId)).toEqual(['c2']);
    const theirs = reduceMessage(s0, { type: 'message', data: rm(6, BOB, { clientId: 'c2' }) }, env());
    expect(theirs.outbox).toBe(s0.outbox);
  });

  it('ignores a room that is not joined (but remembers the sender) and a message it has', () => {
    const s0 = state({ users: { 1: ME, 2: BOB } });
    expect(reduceMessage(s0, { type: 'message', data: rm(5, BOB, { room: 'elsewhere' }) }, env())).toBe(s0);
    const s1 = reduceMessage(s0, { type: 'message', data: rm(5) }, env());
    expect(reduceMessage(s1, { type: 'message', data: rm(5) }, env())).toBe(s1);
  });

  it.each([
    [[] as ConversationKey[], [3, 4, 5]],
    [['r:general'] as ConversationKey[], [1, 2, 3, 4, 5]],
  ])('keeps at most maxMessages, unless the reader reads back (%j)', (readingBack, expected) => {
    let s = state();
    for (const id of [1, 2, 3, 4, 5]) s = reduceMessage(s, { type: 'message', data: rm(id) }, env(3, readingBack));
    expect(ids(s.joined.general.messages)).toEqual(expected);
  });
});

describe('dm and dm_sent', () => {
  it.each([
    ['a DM from bob', dm(7, BOB, 1), 2],
    ['my DM to carol (echo from another tab)', dm(8, ME, 3), 3],
  ])('%s lands in the conversation with the other user, created when new', (_what, m, peer) => {
    const s = reduceDm(state({ users: { 1: ME, 3: CAROL } }), { type: 'dm', data: m }, env());
    expect(ids(s.dms[peer].messages)).toEqual([m.id]);
    expect(s.dms[peer].username).toBe(peer === 2 ? 'bob' : 'carol');
    expect(s.dms[peer].historyLoaded).toBe(false);
  });

  it('dm_sent acknowledges the outbox entry and adds the message', () => {
    const s0 = state({ outbox: [pending('c1', { kind: 'dm', to: 2, room: undefined })] });
    const s = reduceDmSent(s0, { type: 'dm_sent', data: { to: 2, status: 'ok', message: dm(9, ME, 2, { clientId: 'c1' }) } }, env());
    expect(s.outbox).toEqual([]);
    expect(ids(s.dms[2].messages)).toEqual([9]);
    expect(s.dms[2].username).toBe('user 2'); // not known yet: my own message does not name them
  });
});

describe('room_history and dm_history', () => {
  const loaded = (have: number[], patch: Partial<RoomState> = {}) =>
    state({ joined: { general: room('general', { status: 'joined', historyLoaded: true, hasMore: true, messages: have.map((i) => rm(i)), ...patch }) } });

  it.each([
    // [what, start, answered, page, expected ids, historyLoaded, hasMore, loadingOlder]
    ['latest, full page', state({ joined: { general: room('general') } }), req('latest'), [4, 5, 6], [4, 5, 6], true, true, false],
    ['latest, short page', state({ joined: { general: room('general') } }), req('latest'), [5, 6], [5, 6], true, false, false],
    [
      'latest, full, not reaching back to a live message seen before: that one goes (no hole)',
      state({ joined: { general: room('general', { messages: [rm(2)] }) } }),
      req('latest'),
      [4, 5, 6],
      [4, 5, 6],
      true,
      true,
      false,
    ],
    ['before, full', loaded([10, 11], { loadingOlder: true }), req('before', 10), [7, 8, 9], [7, 8, 9, 10, 11], true, true, false],
    ['before, short', loaded([10, 11], { loadingOlder: true }), req('before', 10), [9], [9, 10, 11], true, false, false],
    ['before an id dropped meanwhile', loaded([12, 13], { loadingOlder: true }), req('before', 10), [7, 8, 9], [12, 13], true, true, false],
    ['stale: merged, flags untouched', loaded([10], { loadingOlder: true }), STALE, [11], [10, 11], true, true, true],
  ] as Array<[string, ChatState, AnsweredRequest, number[], number[], boolean, boolean, boolean]>)(
    '%s',
    (_what, s0, answered, page, expected, historyLoaded, hasMore, loadingOlder) => {
      const s = reduceRoomHistory(s0, { type: 'room_history', room: 'general', data: page.map((i) => rm(i)) }, env(), answered);
      expect(ids(s.joined.general.messages)).toEqual(expected);
      expect(s.joined.general).toMatchObject({ historyLoaded, hasMore, loadingOlder });
    },
  );

  it('a DM page is the same operation: the conversation is created, named after the peer, marked loaded', () => {
    const page = [dm(3, BOB, 1), dm(4, ME, 2)];
    const s = reduceDmHistory(state(), { type: 'dm_history', with: 2, data: page }, env(), req('latest', undefined, 2));
    expect(s.dms[2]).toMatchObject({ username: 'bob', historyLoaded: true, hasMore: true, loadingOlder: false });
    expect(ids(s.dms[2].messages)).toEqual([3, 4]);
  });

  it('a DM catch-up (after) marks the conversation loaded and leaves hasMore alone', () => {
    const s0 = state({ dms: { 2: { ...newDm(2, 'bob'), hasMore: false } } });
    const s = reduceDmHistory(s0, { type: 'dm_history', with: 2, data: [dm(8, BOB, 1)] }, env(), req('after', 5));
    expect(s.dms[2]).toMatchObject({ historyLoaded: true, hasMore: false });
  });
});

describe('join_ack', () => {
  it('marks the room joined with its users once each and its online count, and counts it in the rooms list', () => {
    const s0 = state({ joined: { general: room('general') }, rooms: [{ name: 'zoo', description: '', online: 1 }] });
    const s = reduceJoinAck(s0, { type: 'join_ack', room: 'general', data: { room: 'general', status: 'ok', users: [ME, BOB, ME], online: 1 } });
    expect(s.joined.general).toMatchObject({ status: 'joined', users: [ME, BOB], online: 2 });
    expect(s.rooms.map((r) => [r.name, r.online])).toEqual([
      ['general', 2],
      ['zoo', 1],
    ]);
    expect(s.users[2]).toEqual(BOB);
  });

  it('adds a room I became a member of elsewhere (another device, an invitation), a member in the rooms list', () => {
    const s0 = state({ joined: {}, rooms: [{ name: 'team', description: '', online: 0, members: 1, member: false }] });
    const s = reduceJoinAck(s0, { type: 'join_ack', room: 'team', data: { room: 'team', status: 'ok', users: [ME, BOB], online: 2, members: 2 } });
    expect(s.joined.team).toMatchObject({ status: 'joined', users: [ME, BOB], online: 2, members: 2, historyLoaded: false });
    expect(s.rooms).toEqual([{ name: 'team', description: '', online: 2, members: 2, member: true }]);
  });

  it("keeps the room's owner, as the server names it (none: null)", () => {
    const frame = parseServerFrame(
      JSON.stringify({ type: 'join_ack', room: 'team', data: { room: 'team', status: 'ok', users: [ME], online: 1, members: 2, lastId: 0, owner: 2 } }),
    );
    expect(frame).toMatchObject({ type: 'join_ack', data: { owner: 2 } });
    const s = reduceJoinAck(state({ joined: {} }), frame as JoinAckFrame);
    expect(s.joined.team.owner).toBe(2);
    const plain = reduceJoinAck(s, { type: 'join_ack', room: 'team', data: { room: 'team', status: 'ok', users: [ME] } });
    expect(plain.joined.team.owner).toBeNull();
  });
});

describe('left', () => {
  it.each([
    ['left and listed: one fewer', {}, 3, 2],
    ['joined again since', { general: room('general') }, 3, 3],
    ['nobody counted', {}, 0, 0],
  ])('%s', (_what, joined, online, expected) => {
    const s0 = state({ joined, rooms: [{ name: 'general', description: '', online }] });
    const s = reduceLeft(s0, { type: 'left', room: 'general' });
    expect(s.rooms[0].online).toBe(expected);
    if (expected === online) expect(s).toBe(s0);
  });
});

describe('presence', () => {
  it.each([
    // [what, users listed, online, event, user, users after, online after, rooms list after]
    ['a join counts a new user', [ME], 1, 'join', BOB, [ME, BOB], 2, 2],
    ['a join of a listed user counts nothing', [ME, BOB], 2, 'join', BOB, [ME, BOB], 2, 2],
    ['a leave uncounts a listed user', [ME, BOB], 2, 'leave', BOB, [ME], 1, 1],
    ['a leave in a crowded room uncounts one the capped list does not show', [ME], 5, 'leave', CAROL, [ME], 4, 4],
    ['a leave of someone not counted counts nothing', [ME], 1, 'leave', CAROL, [ME], 1, 1],
  ] as const)('%s', (_what, users, online, event, u, usersAfter, onlineAfter, listed) => {
    const s0 = state({
      joined: { general: room('general', { status: 'joined', users: [...users], online, typing: [u] }) },
      rooms: [{ name: 'general', description: '', online }],
    });
    const s = reducePresence(s0, { type: 'presence', room: 'general', data: { event, ...u } });
    expect(s.joined.general.users).toEqual(usersAfter);
    expect(s.joined.general.online).toBe(onlineAfter);
    expect(s.rooms[0].online).toBe(listed);
    expect(s.joined.general.typing).toEqual(event === 'leave' ? [] : [u]);
  });

  it('only remembers the user for a room not joined', () => {
    const s = reducePresence(state({ joined: {} }), { type: 'presence', room: 'x', data: { event: 'join', ...CAROL } });
    expect(s.users[3]).toEqual(CAROL);
    expect(s.joined).toEqual({});
  });
});

describe('typing', () => {
  it.each([
    ['someone else in a joined room', 'general', BOB, [BOB]],
    ['me (another tab)', 'general', ME, []],
    ['a room not joined', 'elsewhere', BOB, undefined],
  ])('%s', (_what, roomName, u, typing) => {
    const s0 = state();
    const s = reduceTyping(s0, { type: 'typing', room: roomName, data: u });
    expect(s.joined[roomName]?.typing).toEqual(typing);
    if (!typing?.length) expect(s).toBe(s0);
  });

  it('shows a user typing once', () => {
    const s1 = reduceTyping(state(), { type: 'typing', room: 'general', data: BOB });
    expect(reduceTyping(s1, { type: 'typing', room: 'general', data: BOB })).toBe(s1);
  });
});

describe('rooms', () => {
  it('takes the list, gives joined rooms its counts, and counts at least the users a joined room lists', () => {
    const s0 = state({
      joined: {
        general: room('general', { status: 'joined', users: [ME, BOB, CAROL], online: 3 }),
        big: room('big', { status: 'joined', users: [ME], online: 40 }),
      },
    });
    const s = reduceRooms(s0, {
      type: 'rooms',
      data: [
        { name: 'big', online: 55 },
        { name: 'general', online: 1 },
        { name: 'other', online: 4 },
      ],
    });
    expect(s.joined.big.online).toBe(55);
    expect(s.joined.general.online).toBe(3);
    expect(s.rooms.map((r) => r.online)).toEqual([55, 3, 4]);
  });
});

describe('conversations', () => {
  it('lists every partner with the id of its newest message, keeping loaded conversations', () => {
    const s0 = state({ dms: { 2: { ...newDm(2, 'user 2'), messages: [dm(4, BOB, 1)], historyLoaded: true } } });
    const s = reduceConversations(s0, {
      type: 'conversations',
      data: [
        { userId: 3, username: 'carol', lastId: 9 },
        { userId: 2, username: 'bob', lastId: 4 },
      ],
    });
    expect(s.dms[2]).toMatchObject({ username: 'bob', listedLastId: 4, historyLoaded: true });
    expect(ids(s.dms[2].messages)).toEqual([4]);
    expect(s.dms[3]).toMatchObject({ username: 'carol', listedLastId: 9, historyLoaded: false, messages: [] });
    expect(s.users[3]).toEqual(CAROL);
  });
});

describe('disconnected (not a frame)', () => {
  it('sends again what was in flight, rejoins rooms, and forgets who was online and typing; keeps messages', () => {
    const s0 = state({
      joined: { general: room('general', { status: 'joined', users: [BOB], online: 2, typing: [BOB], loadingOlder: true, messages: [rm(1)] }) },
      dms: { 2: { ...newDm(2, 'bob'), loadingOlder: true } },
      outbox: [pending('a'), pending('b', { status: 'failed' })],
    });
    const s = reduceDisconnected(s0);
    expect(s.outbox.map((p) => p.status)).toEqual(['queued', 'failed']);
    expect(s.joined.general).toMatchObject({ status: 'joining', users: [], online: null, typing: [], loadingOlder: false });
    expect(ids(s.joined.general.messages)).toEqual([1]);
    expect(s.dms[2].loadingOlder).toBe(false);
  });
});
