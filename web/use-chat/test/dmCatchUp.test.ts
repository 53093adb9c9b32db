/**
 * A DM conversation's catch-up after a reconnection brings the edits, deletes and reactions made
 * while the client was away (the `events` of `dm_history` with `after`), applied once each in id
 * order, with live events that come before the answer held until it is applied.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ChatClient, type ChatClientOptions } from '../src';
import { ALICE, BOB, startServer, TestClients, until, whileServerDown } from './harness';
import type { FakeChatServer } from './fakeServer';

let server: FakeChatServer;
const clients = new TestClients(() => server.url);
const makeClient = (opts: Partial<ChatClientOptions> = {}) => clients.make(opts);

/** Starts `c` with bob's conversation open and `contents` from bob in it. */
async function startWithBob(c: ChatClient, ...contents: string[]) {
  c.start();
  await until(() => c.getState().status === 'open');
  c.openDm(BOB.userId, 'bob');
  await until(() => c.getState().dms[BOB.userId]?.historyLoaded);
  for (const content of contents) server.postDm(BOB, ALICE.userId, content);
  await until(() => c.getState().dms[BOB.userId].messages.length === contents.length);
  return c.getState().dms[BOB.userId].messages.map((m) => m.id);
}

const catchUps = () => server.framesOfType('dm_history').filter((f) => f.after !== undefined);
const bobs = (c: ChatClient) => c.getState().dms[BOB.userId];

beforeEach(async () => {
  server = await startServer();
});

afterEach(async () => {
  clients.stopAll();
  await server.kill();
});

describe('DM catch-up of edits, deletes and reactions', () => {
  it('applies what changed while away to the messages it had, each once, in id order', async () => {
    const c = makeClient();
    const [first, second, third] = await startWithBob(c, 'first', 'second', 'third');
    let last = 0;
    await whileServerDown(server, c, () => {
      server.dmEvent(BOB, first, { content: 'first, edited' });
      server.dmEvent(BOB, second, { emoji: '👍', on: true });
      server.dmEvent(ALICE, second, { emoji: '👍', on: true });
      server.dmEvent(BOB, second, { emoji: '👍', on: false });
      last = server.dmEvent(BOB, third, { deleted: true }).eventId;
    });
    await until(() => bobs(c).lastEventId === last);
    const [a, b, d] = bobs(c).messages;
    expect(a).toMatchObject({ id: first, content: 'first, edited' });
    expect(a.editedAt).toBeDefined();
    // on, on, off: applied in order (out of order, bob's would still be on)
    expect(b.reactions).toEqual({ '👍': [ALICE.userId] });
    expect(d).toMatchObject({ id: third, content: '', deleted: true });
    // one catch-up, after the last message seen; nothing new to page through
    expect(catchUps()).toEqual([{ type: 'dm_history', with: BOB.userId, limit: 50, after: third }]);
  });

  it('resumes after the last event seen when an event came after the last message', async () => {
    const c = makeClient();
    const [first] = await startWithBob(c, 'first');
    const seen = server.dmEvent(BOB, first, { emoji: '🎉', on: true }).eventId;
    await until(() => bobs(c).lastEventId === seen);
    let edit = 0;
    await whileServerDown(server, c, () => {
      edit = server.dmEvent(BOB, first, { content: 'first, edited' }).eventId;
    });
    await until(() => bobs(c).lastEventId === edit);
    expect(catchUps().map((f) => f.after)).toEqual([seen]);
    expect(bobs(c).messages[0]).toMatchObject({ content: 'first, edited', reactions: { '🎉': [BOB.userId] } });
  });

  it('holds a live event that comes before the catch-up answer, and applies it after', async () => {
    const c = makeClient();
    const [first, second] = await startWithBob(c, 'first', 'second');
    await whileServerDown(server, c, () => server.dmEvent(BOB, first, { content: 'edited while away' }));
    let live = 0;
    // a reaction told live just before the server answers the catch-up (it reaches the client first)
    server.onFrame = (_conn, f) => {
      if (f.type === 'dm_history' && f.after !== undefined && !live) live = server.dmEvent(BOB, second, { emoji: '👍', on: true }).eventId;
    };
    await until(() => live && bobs(c).lastEventId === live);
    const [a, b] = bobs(c).messages;
    // applied first, the newer live event would have made the older edit look seen already
    expect(a.content).toBe('edited while away');
    expect(b.reactions).toEqual({ '👍': [BOB.userId] });
  });

  it('asks again after the last event when the server cut the events (more)', async () => {
    server.dmCatchUpEvents = 2;
    const c = makeClient();
    const [first] = await startWithBob(c, 'first');
    const ids: number[] = [];
    await whileServerDown(server, c, () => {
      for (const emoji of ['👍', '🎉', '❤️']) ids.push(server.dmEvent(BOB, first, { emoji, on: true }).eventId);
    });
    await until(() => bobs(c).lastEventId === ids[2]);
    expect(catchUps().map((f) => f.after)).toEqual([first, ids[1]]);
    expect(bobs(c).messages[0].reactions).toEqual({ '👍': [BOB.userId], '🎉': [BOB.userId], '❤️': [BOB.userId] });
  });

  it('leaves live events alone in a conversation that is not catching up', async () => {
    const c = makeClient();
    const [first] = await startWithBob(c, 'first');
    server.dmEvent(BOB, first, { content: 'edited live' });
    await until(() => bobs(c).messages[0].content === 'edited live');
    expect(catchUps()).toEqual([]);
  });
});
