/**
 * The client against the fake server in its stored-membership mode (PROTOCOL.md §6, §8, §11): my
 * rooms come from `welcome` and follow my other devices; a reconnection resumes each of them with
 * `join` + `since`; invitations and removals; creating rooms; finding people.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type ChatClientOptions, type MembershipEvent } from '../src';
import { ALICE, BOB, TestClients, until } from './harness';
import { FakeChatServer } from './fakeServer';

let server: FakeChatServer;
const clients = new TestClients(() => server.url);
const makeClient = (opts: Partial<ChatClientOptions> = {}) => clients.make(opts);

/** The frames of `type` alice sent on her `n`-th connection (1-based). */
function sentOn(n: number, type: string) {
  const ids = [...new Set(server.received.filter((r) => r.user === ALICE.userId).map((r) => r.conn))];
  return server.received.filter((r) => r.conn === ids[n - 1] && r.frame.type === type).map((r) => r.frame);
}

beforeEach(async () => {
  server = new FakeChatServer();
  server.members = new Map();
  server.addUser(ALICE.userId, ALICE.username);
  server.addUser(BOB.userId, BOB.username);
  server.addUser(3, 'bobby');
  await server.start();
});

afterEach(async () => {
  clients.stopAll();
  await server.kill();
});

describe('my rooms, as the server stores them', () => {
  it('a new user joins the default rooms; one with rooms gets exactly those, remembered ones left elsewhere go', async () => {
    const fresh = makeClient({ defaultRooms: ['general'] });
    fresh.start();
    await until(() => fresh.getState().joined.general?.status === 'joined');
    expect(sentOn(1, 'join')).toEqual([{ type: 'join', room: 'general' }]);
    fresh.stop();
    server.memberOf(ALICE.userId).add('team');
    const c = makeClient({ initialRooms: ['general', 'left-elsewhere'], defaultRooms: ['general'] });
    server.memberOf(ALICE.userId).delete('general');
    c.start();
    await until(() => c.getState().joined.team?.status === 'joined');
    expect(Object.keys(c.getState().joined)).toEqual(['team']);
    // the room the server lists is loaded: its latest page
    await until(() => c.getState().joined.team.historyLoaded);
  });

  it('an empty list while this client has rooms is checked first: kept while my_rooms is refused, dropped once it says so', async () => {
    server.memberOf(ALICE.userId).add('general');
    const c = makeClient();
    c.start();
    await until(() => c.getState().joined.general?.status === 'joined');
    // a server that cannot read the database greets with no rooms and refuses my_rooms
    server.memberOf(ALICE.userId).delete('general');
    server.refuse = (_conn, f) => (f.type === 'my_rooms' || f.type === 'join' ? { code: 'unavailable', message: 'database down' } : null);
    server.dropAll();
    await until(() => server.framesOfType('my_rooms').length === 1);
    await until(() => c.getState().status === 'open');
    expect(Object.keys(c.getState().joined)).toEqual(['general']);
    // not joined meanwhile: a join would make alice a member again of a room she left elsewhere
    expect(sentOn(2, 'join')).toEqual([]);
    expect(c.getState().errors.filter((e) => e.message === 'database down' && e.requestType === 'my_rooms')).toEqual([]);
    // back: asked again, the room left elsewhere meanwhile goes
    server.refuse = null;
    await until(() => !c.getState().joined.general, 8000);
    expect(server.framesOfType('my_rooms').length).toBeGreaterThanOrEqual(2);
  });

  it('a reconnection resumes each room with join + since its last id: what was missed arrives once, nothing else', async () => {
    server.memberOf(ALICE.userId).add('general');
    server.post('general', BOB, 'before');
    const c = makeClient();
    c.start();
    await until(() => c.getState().joined.general?.historyLoaded && c.getState().joined.general.messages.length === 1);
    const seen = c.getState().joined.general.messages[0].id;
    await server.kill();
    await until(() => c.getState().status === 'reconnecting');
    server.post('general', BOB, 'while away');
    await server.start(server.port);
    await until(() => c.getState().joined.general.messages.length === 2);
    expect(sentOn(2, 'join')).toEqual([{ type: 'join', room: 'general', since: seen }]);
    expect(sentOn(2, 'room_history')).toEqual([]);
    expect(c.getState().joined.general.messages.map((m) => m.content)).toEqual(['before', 'while away']);
  });

  it('a join_ack from my other device lists the room and loads it; a left from there drops it', async () => {
    server.memberOf(ALICE.userId).add('general');
    const c = makeClient();
    c.start();
    await until(() => c.getState().joined.general?.status === 'joined');
    server.post('elsewhere', BOB, 'old news');
    server.sendToUser(ALICE.userId, { type: 'join_ack', room: 'elsewhere', data: { room: 'elsewhere', status: 'ok', users: [ALICE], online: 1, members: 2 } });
    await until(() => c.getState().joined.elsewhere?.historyLoaded);
    expect(c.getState().joined.elsewhere.messages.map((m) => m.content)).toEqual(['old news']);
    // the rooms list says whether it is private
    await until(() => sentOn(1, 'rooms').length === 2);
    server.sendToUser(ALICE.userId, { type: 'left', room: 'elsewhere' });
    await until(() => !c.getState().joined.elsewhere);
  });

  it('an invitation lists the room and tells the user; a removal drops it and tells them too', async () => {
    const events: MembershipEvent[] = [];
    const c = makeClient({ onMembership: (e) => events.push(e) });
    c.start();
    await until(() => c.getState().status === 'open');
    server.sendToUser(ALICE.userId, { type: 'invited', room: 'team', data: { room: 'team', private: true, description: '', by: BOB } });
    server.sendToUser(ALICE.userId, { type: 'join_ack', room: 'team', data: { room: 'team', status: 'ok', users: [ALICE, BOB], online: 2, members: 2 } });
    await until(() => c.getState().joined.team?.status === 'joined');
    expect(c.getState().joined.team.private).toBe(true);
    c.sendMessage('team', 'kept?');
    server.sendToUser(ALICE.userId, { type: 'left', room: 'team', reason: 'removed' });
    await until(() => !c.getState().joined.team);
    expect(c.getState().outbox).toEqual([]);
    expect(events).toEqual([
      { kind: 'invited', room: 'team', by: BOB },
      { kind: 'removed', room: 'team' },
    ]);
  });

  it('a join_ack answering a join made before a leave does not bring the room back', async () => {
    const c = makeClient();
    c.start();
    await until(() => c.getState().status === 'open');
    // the join's answer comes late, the leave's not yet
    server.onFrame = (_conn, f) => (f.type === 'join' || f.type === 'leave' ? 'ignore' : undefined);
    c.join('fleeting');
    c.leave('fleeting');
    server.sendToUser(ALICE.userId, { type: 'join_ack', room: 'fleeting', data: { room: 'fleeting', status: 'ok', users: [ALICE] } });
    await until(() => server.framesOfType('leave').length === 1);
    server.onFrame = null;
    c.join('general');
    await until(() => c.getState().joined.general?.status === 'joined');
    expect(c.getState().joined.fleeting).toBeUndefined();
  });
});

describe('conversations from my other device', () => {
  it('a DM I wrote on another device to someone this one never saw: their name comes from the conversations list', async () => {
    const c = makeClient();
    c.start();
    await until(() => server.framesOfType('conversations').length === 1); // asked after welcome
    const asked = 1;
    // as the server tells my other connections of a DM I sent
    server.sendToUser(ALICE.userId, { type: 'dm', data: server.postDm(ALICE, 3, 'hi bobby') });
    await until(() => c.getState().dms[3]?.username === 'bobby');
    expect(server.framesOfType('conversations').length).toBe(asked + 1);
  });
});

describe('creating rooms', () => {
  it('creates a private room (listed at once, joined on its ack); a taken name is refused and the room goes', async () => {
    const c = makeClient();
    c.start();
    await until(() => c.getState().status === 'open');
    expect(c.createRoom('team', { private: true, description: 'the team' })).toBe(true);
    expect(c.getState().joined.team).toMatchObject({ private: true, status: 'joining' });
    await until(() => c.getState().joined.team.status === 'joined' && c.getState().joined.team.historyLoaded);
    expect(server.framesOfType('create_room')).toEqual([{ type: 'create_room', room: 'team', private: true, description: 'the team' }]);
    c.leave('team');
    await until(() => server.framesOfType('leave').length === 1);
    c.createRoom('team');
    await until(() => c.getState().errors.some((e) => e.code === 'invalid'));
    expect(c.getState().joined.team).toBeUndefined();
  });

  it('a room created whose answer was lost with the connection is not created again', async () => {
    const c = makeClient();
    c.start();
    await until(() => c.getState().status === 'open');
    server.onFrame = (_conn, f) => (f.type === 'create_room' ? 'lose-reply' : undefined);
    c.createRoom('team', { private: true });
    await until(() => c.getState().status !== 'open');
    server.onFrame = null;
    await until(() => c.getState().joined.team?.status === 'joined');
    expect(server.framesOfType('create_room')).toHaveLength(1);
    expect(sentOn(2, 'join')).toEqual([{ type: 'join', room: 'team' }]);
    expect(c.getState().errors).toEqual([]);
  });

  it('invite and remove go to the server as they are', async () => {
    server.memberOf(ALICE.userId).add('team');
    const c = makeClient();
    c.start();
    await until(() => c.getState().joined.team?.status === 'joined');
    c.invite('team', BOB.userId);
    c.remove('team', BOB.userId);
    await until(() => server.received.some((r) => r.frame.type === 'remove'));
    expect(server.received.filter((r) => ['invite', 'remove'].includes(r.frame.type)).map((r) => r.frame)).toEqual([
      { type: 'invite', room: 'team', userId: 2 },
      { type: 'remove', room: 'team', userId: 2 },
    ]);
  });
});

describe('finding people', () => {
  it('shows the answer to the latest search only, online people first, offline ones too', async () => {
    const c = makeClient();
    c.start();
    await until(() => c.getState().status === 'open');
    c.findUsers('b');
    c.findUsers('bo');
    await until(() => server.framesOfType('users').length === 2);
    await until(() => c.getState().people?.results !== null);
    expect(c.getState().people).toEqual({
      query: 'bo',
      results: [
        { userId: 2, username: 'bob', online: false },
        { userId: 3, username: 'bobby', online: false },
      ],
    });
    expect(c.getState().userOnline).toEqual({ 2: false, 3: false });
    c.clearUsers();
    expect(c.getState().people).toBeNull();
  });
});
