import { describe, expect, it } from 'vitest';
import { mentionKind, mentionPattern, mentionsUser } from '../src/mentions';

describe('mentionsUser: @username as a whole word, case-insensitive, or @room (protocol §9)', () => {
  const cases: Array<[string, string, boolean]> = [
    ['@alice hi', 'alice', true],
    ['hi @alice', 'alice', true],
    ['hi @ALICE!', 'alice', true],
    ['hi @Alice, and you', 'alice', true],
    ['(@alice)', 'alice', true],
    ['@alice.', 'alice', true],
    ['line\n@alice', 'alice', true],
    ['@alice-bob', 'alice', true], // "-" ends the word
    ['@room please look', 'alice', true],
    ['@ROOM', 'alice', true],
    ['hey @bob', 'alice', false],
    ['@alice2', 'alice', false],
    ['@alice_b', 'alice', false],
    ['@alicé', 'alice', false],
    ['alice@alice.com', 'alice', false], // an e-mail address
    ['x@room', 'alice', false],
    ['@roommate', 'alice', false],
    ['alice', 'alice', false],
    ['@ alice', 'alice', false],
    ['', 'alice', false],
    ['@Éva!', 'éva', true],
    ['@ÉVA', 'éva', true],
    ['@john smith, hi', 'john smith', true], // names may hold spaces
    ['@john', 'john smith', false],
    ['@a.b', 'a.b', true],
    ['@axb', 'a.b', false], // a dot in a name is a dot, not "any character"
    ['@(x)', '(x)', true],
    ['@שלום מה', 'שלום', true],
    ['@שלוםמה', 'שלום', false],
  ];
  it.each(cases)('%j mentions %j: %s', (content, username, expected) => {
    expect(mentionsUser(content, username)).toBe(expected);
  });
});

describe('mentionPattern / mentionKind', () => {
  it('finds every mention of the user and of the room, with their names as written', () => {
    const found = [...'@Alice and @room, not @alicex; @ALICE'.matchAll(mentionPattern('alice'))].map((m) => [m.index, m[1]]);
    expect(found).toEqual([
      [0, 'Alice'],
      [11, 'room'],
      [31, 'ALICE'],
    ]);
  });

  it('prefers the longer name', () => {
    const [m] = '@room mate'.matchAll(mentionPattern('room mate'));
    expect(m[1]).toBe('room mate');
    expect(mentionKind(m[1], 'room mate')).toBe('me');
  });

  it('tells the user from the room', () => {
    expect(mentionKind('ALICE', 'alice')).toBe('me');
    expect(mentionKind('room', 'alice')).toBe('room');
    expect(mentionKind('room', null)).toBe('room');
  });
});
