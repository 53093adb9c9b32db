/**
 * The pure reducers of stored membership (src/memberReducers.ts): the rooms `welcome` and
 * `my_rooms` list, `invited`, `left` of a room still listed (with the reason "removed"), `users`.
 */
import { describe, expect, it } from 'vitest';
import { reduceInvited, reduceLeftElsewhere, reduceMemberRooms, reduceUsers, withoutRoom } from '../src/memberReducers';
import { parseServerFrame, type RoomMessage } from '../src/protocol';
import { reduceRooms } from '../src/reducers';
import { newRoom } from '../src/rooms';
import type { PendingMessage, RoomState } from '../src/state';
import { BOB } from './harness';
import { openState as state } from './states';

function room(name: string, patch: Partial<RoomState> = {}): RoomState {
  return { ...newRoom(name), ...patch };
}

const msg = (id: number, r: string): RoomMessage => ({ id, fromUser: 2, username: 'bob', content: `m${id}`, timestamp: 't', room: r });

const pending = (clientId: string, r: string): PendingMessage => ({
  clientId,
  kind: 'message',
  room: r,
  content: 'x',
  createdAt: 0,
  attempts: 0,
  lastSentAt: null,
  status: 'queued',
});

describe('the rooms the server lists as mine (welcome, my_rooms)', () => {
  const loaded = room('general', { status: 'joined', historyLoaded: true, messages: [msg(5, 'general')] });

  it('keeps the rooms it had as they are, adds the new ones with their privacy', () => {
    const s0 = state({ joined: { general: loaded } });
    const s = reduceMemberRooms(
      s0,
      [
        { room: 'general', private: false, lastId: 9 },
        { room: 'team', private: true, lastId: 3 },
      ],
      new Set(),
      true,
    );
    expect(s.joined.general).toBe(loaded);
    expect(s.joined.team).toMatchObject({ name: 'team', private: true, historyLoaded: false, messages: [] });
  });

  it('drops a room left elsewhere meanwhile, with its unsent messages, but not one asked for here', () => {
    const s0 = state({
      joined: { general: loaded, old: room('old'), asked: room('asked') },
      outbox: [pending('a', 'old'), pending('b', 'general'), pending('c', 'asked')],
    });
    const s = reduceMemberRooms(s0, [{ room: 'general', private: false, lastId: 9 }], new Set(['asked']), true);
    expect(Object.keys(s.joined).sort()).toEqual(['asked', 'general']);
    expect(s.outbox.map((p) => p.clientId)).toEqual(['b', 'c']);
  });

  it('drops nothing from a list that may not be complete (a full welcome, a my_rooms page)', () => {
    const s0 = state({ joined: { general: loaded, other: room('other') } });
    const s = reduceMemberRooms(s0, [{ room: 'more', private: false, lastId: 0 }], new Set(), false);
    expect(Object.keys(s.joined).sort()).toEqual(['general', 'more', 'other']);
  });

  it('returns the state itself when nothing changes', () => {
    const s0 = state({ joined: { general: loaded } });
    expect(reduceMemberRooms(s0, [{ room: 'general', private: false, lastId: 5 }], new Set(), true)).toBe(s0);
  });

  it('parses welcome.rooms and welcome.conversations, and a welcome without them (older servers)', () => {
    const f = parseServerFrame(
      JSON.stringify({
        type: 'welcome',
        data: {
          userId: 1,
          username: 'alice',
          serverTime: 't',
          rooms: [{ room: 'team', private: true, lastId: 4, unread: 1 }, { nope: 1 }],
          conversations: [{ userId: 2, username: 'bob', lastId: 7 }],
        },
      }),
    );
    expect(f).toMatchObject({
      type: 'welcome',
      data: { rooms: [{ room: 'team', private: true, lastId: 4 }], conversations: [{ userId: 2, username: 'bob', lastId: 7 }] },
    });
    const old = parseServerFrame(JSON.stringify({ type: 'welcome', data: { userId: 1, username: 'alice', serverTime: 't' } }));
    expect(old?.type === 'welcome' && old.data.rooms).toBe(undefined);
    expect(parseServerFrame(JSON.stringify({ type: 'my_rooms', data: [{ room: 'x', private: false, lastId: 0 }] }))).toEqual({
      type: 'my_rooms',
      data: [{ room: 'x', private: false, lastId: 0 }],
    });
  });
});

describe('invited', () => {
  const frame = parseServerFrame(
    JSON.stringify({ type: 'invited', room: 'team', data: { room: 'team', private: true, description: 'the team', by: BOB } }),
  );

  it('parses', () => {
    expect(frame).toEqual({ type: 'invited', room: 'team', data: { room: 'team', private: true, description: 'the team', by: BOB } });
  });

  it('lists the private room at once (its join_ack follows), a member in the rooms list; knows who invited', () => {
    const s0 = state({ rooms: [{ name: 'team', online: 1, member: false }] });
    const s = reduceInvited(s0, frame as never);
    expect(s.joined.team).toMatchObject({ name: 'team', private: true, status: 'joining' });
    expect(s.rooms[0].member).toBe(true);
    expect(s.users[2]).toEqual(BOB);
  });

  it('keeps what it had of a room it knew', () => {
    const had = room('team', { messages: [msg(3, 'team')] });
    const s = reduceInvited(state({ joined: { team: had } }), frame as never);
    expect(s.joined.team.messages).toEqual(had.messages);
  });
});

describe('left, of a room still listed (left on another device, or removed by its owner)', () => {
  it('parses the reason', () => {
    expect(parseServerFrame('{"type":"left","room":"team","reason":"removed"}')).toEqual({ type: 'left', room: 'team', reason: 'removed' });
    expect(parseServerFrame('{"type":"left","room":"team"}')).toEqual({ type: 'left', room: 'team' });
  });

  it('drops the room and its unsent messages, and marks it no longer mine in the rooms list', () => {
    const s0 = state({
      joined: { team: room('team', { status: 'joined' }), general: room('general') },
      rooms: [{ name: 'team', online: 2, member: true }],
      outbox: [pending('a', 'team'), pending('b', 'general')],
    });
    const s = reduceLeftElsewhere(s0, 'team');
    expect(Object.keys(s.joined)).toEqual(['general']);
    expect(s.outbox.map((p) => p.clientId)).toEqual(['b']);
    expect(s.rooms[0].member).toBe(false);
  });

  it('changes nothing for a room not listed', () => {
    const s0 = state({ joined: { general: room('general') } });
    expect(reduceLeftElsewhere(s0, 'other')).toBe(s0);
    expect(withoutRoom(s0, 'other')).toBe(s0);
  });
});

describe('users', () => {
  const frame = parseServerFrame(
    JSON.stringify({
      type: 'users',
      data: [
        { userId: 2, username: 'bob', online: true },
        { userId: 3, username: 'Bobby', online: false },
        { userId: 'x' },
      ],
    }),
  );

  it('parses, skipping malformed entries', () => {
    expect(frame).toEqual({
      type: 'users',
      data: [
        { userId: 2, username: 'bob', online: true },
        { userId: 3, username: 'Bobby', online: false },
      ],
    });
  });

  it('answers the latest search, and remembers names and who is online', () => {
    const s = reduceUsers(state({ people: { query: 'bo', results: null } }), frame as never, 'bo');
    expect(s.people).toEqual({ query: 'bo', results: [{ userId: 2, username: 'bob', online: true }, { userId: 3, username: 'Bobby', online: false }] });
    expect(s.userOnline).toEqual({ 2: true, 3: false });
    expect(s.users[3]).toEqual({ userId: 3, username: 'Bobby' });
  });

  it('an answer to an earlier search is not shown over the latest one', () => {
    const s = reduceUsers(state({ people: { query: 'bob', results: null } }), frame as never, 'bo');
    expect(s.people).toEqual({ query: 'bob', results: null });
    expect(s.userOnline[2]).toBe(true);
  });
});

describe('rooms list', () => {
  it('tells whether a room joined on another device is private (its join_ack does not)', () => {
    const s0 = state({ joined: { team: room('team', { status: 'joined' }), general: room('general') } });
    const s = reduceRooms(s0, { type: 'rooms', data: [{ name: 'team', online: 1, members: 1, private: true, member: true }, { name: 'general', online: 1 }] });
    expect(s.joined.team.private).toBe(true);
    expect(s.joined.general).toBe(s0.joined.general);
  });
});
