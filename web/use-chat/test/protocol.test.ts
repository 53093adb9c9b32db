import { describe, expect, it } from 'vitest';
import { contentProblem, isBlank, isValidRoomName, mergeById, parseServerFrame } from '../src';

describe('parseServerFrame', () => {
  it('accepts every server frame of PROTOCOL.md §3 (and the conversations extension)', () => {
    const msg = { id: 1, fromUser: 2, username: 'b', content: 'x', timestamp: 't', room: 'r' };
    const dm = { id: 2, fromUser: 2, username: 'b', to: 1, content: 'x', timestamp: 't' };
    const frames = [
      { type: 'welcome', data: { userId: 1, username: 'a', serverTime: 't' } },
      { type: 'message', data: msg },
      { type: 'dm', data: dm },
      { type: 'dm_sent', data: { to: 1, status: 'ok', message: dm } },
      { type: 'room_history', room: 'r', data: [msg] },
      { type: 'dm_history', with: 2, data: [dm] },
      { type: 'error', message: 'm', code: 'invalid', data: { message: 'm', code: 'invalid' } },
      { type: 'join_ack', room: 'r', data: { room: 'r', status: 'ok', users: [{ userId: 1, username: 'a' }] } },
      { type: 'left', room: 'r' },
      { type: 'presence', room: 'r', data: { event: 'join', userId: 2, username: 'b' } },
      { type: 'typing', room: 'r', data: { userId: 2, username: 'b' } },
      { type: 'rooms', data: [{ name: 'r', description: '', online: 1 }] },
      { type: 'pong' },
      { type: 'conversations', data: [{ userId: 2, username: 'b', lastId: 2 }] },
    ];
    for (const f of frames) expect(parseServerFrame(JSON.stringify(f))).toMatchObject({ type: f.type });
  });

  it('ignores unknown types, malformed JSON and ill-shaped frames', () => {
    expect(parseServerFrame('{"type":"future"}')).toBeNull();
    expect(parseServerFrame('not json')).toBeNull();
    expect(parseServerFrame('[1,2]')).toBeNull();
    expect(parseServerFrame('{"type":"message","data":{"id":"1"}}')).toBeNull();
  });

  it('reads error text from data.message when the top level lacks it (older servers)', () => {
    expect(parseServerFrame('{"type":"error","data":{"message":"boom","code":"internal"}}')).toMatchObject({
      message: 'boom',
      code: 'internal',
    });
  });
});

describe('parseServerFrame: the server extensions', () => {
  it('reads the conversations list, skipping ill-shaped entries', () => {
    const text = JSON.stringify({
      type: 'conversations',
      data: [{ userId: 3, username: 'carol', lastId: 9 }, { userId: 2 }, { username: 'no id' }, 'junk'],
    });
    expect(parseServerFrame(text)).toEqual({
      type: 'conversations',
      data: [
        { userId: 3, username: 'carol', lastId: 9 },
        { userId: 2, username: 'user 2', lastId: null },
      ],
    });
    expect(parseServerFrame('{"type":"conversations","data":{}}')).toBeNull();
  });

  it('reads what an error names of its request, at the top level or in data', () => {
    const top = { type: 'error', code: 'not_joined', message: 'm', requestType: 'message', room: 'x', clientId: 'c1' };
    expect(parseServerFrame(JSON.stringify({ ...top, data: { code: 'not_joined', message: 'm' } }))).toMatchObject({
      requestType: 'message',
      room: 'x',
      clientId: 'c1',
      data: { requestType: 'message', room: 'x', clientId: 'c1' },
    });
    const inData = parseServerFrame(
      JSON.stringify({ type: 'error', data: { code: 'not_found', message: 'm', requestType: 'dm', clientId: 'c2' } }),
    );
    expect(inData).toMatchObject({ code: 'not_found', requestType: 'dm', clientId: 'c2' });
    expect(inData).not.toHaveProperty('room');
    // the user ids of a refused dm / dm_history
    const dmHistory = parseServerFrame(
      JSON.stringify({ type: 'error', code: 'unavailable', message: 'm', requestType: 'dm_history', with: 7, data: { code: 'unavailable', message: 'm', with: 7 } }),
    );
    expect(dmHistory).toMatchObject({ requestType: 'dm_history', with: 7 });
    expect(parseServerFrame(JSON.stringify({ type: 'error', code: 'not_found', message: 'm', data: { to: 9 } }))).toMatchObject({ to: 9 });
    expect(parseServerFrame(JSON.stringify({ type: 'error', code: 'invalid', message: 'm', with: '7' }))).not.toHaveProperty('with');
    // older servers name nothing
    expect(parseServerFrame('{"type":"error","code":"invalid","message":"m"}')).toEqual({
      type: 'error',
      code: 'invalid',
      message: 'm',
      data: { code: 'invalid', message: 'm' },
    });
  });

  it('keeps the online count of join_ack when there is one', () => {
    const ack = (data: object) => parseServerFrame(JSON.stringify({ type: 'join_ack', room: 'r', data: { room: 'r', status: 'ok', users: [], ...data } }));
    expect(ack({ online: 1234 })).toMatchObject({ data: { online: 1234 } });
    expect(ack({})).not.toHaveProperty('data.online');
    expect(ack({ online: 'many' })).not.toHaveProperty('data.online');
  });
});

describe('limits', () => {
  it('checks room names and content like the server does', () => {
    expect(isValidRoomName('general')).toBe(true);
    expect(isValidRoomName('a.b-c_d9')).toBe(true);
    expect(isValidRoomName('')).toBe(false);
    expect(isValidRoomName('with space')).toBe(false);
    expect(isValidRoomName('é')).toBe(false);
    expect(contentProblem('hi')).toBeNull();
    expect(contentProblem(' \n ')).not.toBeNull();
    expect(contentProblem('a\u0000b')).not.toBeNull();
    expect(contentProblem('😀'.repeat(4000))).toBeNull(); // 4000 characters, 8000 UTF-16 units
    expect(contentProblem('x'.repeat(4001))).not.toBeNull();
  });

  it('counts as blank what the server does: whitespace and invisible format characters only', () => {
    // the server refuses these as blank (str.isspace() or Unicode category Cf, app/protocol.py)
    for (const blank of ['\u200b', ' \u200b\u2060\ufeff ', '\u00ad', '\u200c\u200d', '\u2028\u3000', '\u001c\u001f', '\u0085', '\u180e']) {
      expect(isBlank(blank), JSON.stringify(blank)).toBe(true);
      expect(contentProblem(blank), JSON.stringify(blank)).toBe('message is empty');
    }
    // ...and accepts these: something visible is there
    for (const shown of ['\u200d👍', 'a\u200b', '\u200b.', '\u3164x', '-']) {
      expect(isBlank(shown), JSON.stringify(shown)).toBe(false);
      expect(contentProblem(shown), JSON.stringify(shown)).toBeNull();
    }
  });

  it('refuses a lone surrogate, which makes the frame unreadable to the server (bad_json)', () => {
    expect(contentProblem('broken \ud83d')).not.toBeNull();
    expect(contentProblem('\ude00 broken')).not.toBeNull();
    expect(contentProblem('fine 😀\ud83d\ude00')).toBeNull();
  });
});

describe('mergeById', () => {
  it('keeps one copy per id, sorted by id, and returns the same array when nothing is new', () => {
    const a = [{ id: 2 }, { id: 5 }];
    expect(mergeById(a, [{ id: 5 }, { id: 2 }])).toBe(a);
    expect(mergeById(a, [{ id: 9 }, { id: 1 }, { id: 9 }, { id: 3 }]).map((m) => m.id)).toEqual([1, 2, 3, 5, 9]);
  });
});
