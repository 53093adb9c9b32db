/**
 * The outbox's copy of a tab's unsent messages (src/outbox.ts: loadUnsent / saveUnsent), which a
 * reloaded page hands to its new client as `initialOutbox`, and `startingOutbox`, what a client
 * makes of it.
 */
import { describe, expect, it } from 'vitest';
import { loadUnsent, saveUnsent, startingOutbox, type UnsentStorage } from '../src/outbox';
import { newRoom } from '../src/rooms';
import type { PendingMessage } from '../src/state';

function memoryStorage(): UnsentStorage & { items: Map<string, string> } {
  const items = new Map<string, string>();
  return {
    items,
    getItem: (k) => items.get(k) ?? null,
    setItem: (k, v) => void items.set(k, v),
    removeItem: (k) => void items.delete(k),
  };
}

const entry = (clientId: string, patch: Partial<PendingMessage> = {}): PendingMessage => ({
  clientId,
  kind: 'message',
  room: 'general',
  content: 'hello',
  createdAt: 1,
  attempts: 1,
  lastSentAt: 1,
  status: 'sent',
  ...patch,
});

describe('unsent messages kept per tab', () => {
  it('keeps them per user under chat.outbox.<userId>, and forgets them when the outbox is empty', () => {
    const storage = memoryStorage();
    const outbox = [entry('a'), entry('b', { kind: 'dm', to: 2, room: undefined, status: 'failed' })];
    saveUnsent(1, outbox, storage);
    expect([...storage.items.keys()]).toEqual(['chat.outbox.1']);
    expect(loadUnsent(1, storage)).toEqual(JSON.parse(JSON.stringify(outbox)));
    expect(loadUnsent(2, storage)).toEqual([]);
    saveUnsent(1, [], storage);
    expect(storage.items.size).toBe(0);
  });

  it.each([
    ['not JSON', '{'],
    ['not a list', '{"clientId":"a"}'],
  ])('reads nothing from a stored value that is %s', (_what, raw) => {
    const storage = memoryStorage();
    storage.items.set('chat.outbox.1', raw);
    expect(loadUnsent(1, storage)).toEqual([]);
  });

  it('drops entries that are not outbox entries (a room message without its room, an unknown status)', () => {
    const storage = memoryStorage();
    const good = entry('good');
    const noRoom = { ...good, clientId: 'x', room: undefined };
    const badStatus = { ...good, clientId: 'y', status: 'lost' };
    storage.items.set('chat.outbox.1', JSON.stringify([good, noRoom, badStatus, null]));
    expect(loadUnsent(1, storage).map((p) => p.clientId)).toEqual(['good']);
  });

  it('survives a storage that refuses (full, or disabled)', () => {
    const refusing: UnsentStorage = {
      getItem: () => {
        throw new Error('SecurityError');
      },
      setItem: () => {
        throw new Error('QuotaExceededError');
      },
      removeItem: () => {
        throw new Error('SecurityError');
      },
    };
    expect(loadUnsent(1, refusing)).toEqual([]);
    expect(() => saveUnsent(1, [entry('a')], refusing)).not.toThrow();
  });
});

describe('startingOutbox', () => {
  it('keeps the messages of rooms joined and DMs to a valid user, all to be sent again', () => {
    const start = startingOutbox(
      [
        entry('a'),
        entry('b', { room: 'left-since' }),
        entry('c', { kind: 'dm', to: 2, room: undefined }),
        entry('d', { kind: 'dm', to: 1.5, room: undefined }),
        entry('e', { status: 'failed' }),
      ],
      { general: newRoom('general') },
    );
    expect(start.map((p) => [p.clientId, p.status])).toEqual([
      ['a', 'queued'],
      ['c', 'queued'],
      ['e', 'failed'],
    ]);
  });
});
