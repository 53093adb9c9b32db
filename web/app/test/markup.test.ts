import { describe, expect, it } from 'vitest';
import { parseMessage, type MarkupNode } from '../src/markup/parse';

const t = (text: string): MarkupNode => ({ type: 'text', text });
const code = (text: string): MarkupNode => ({ type: 'code', text });
const block = (text: string, lang: string | null = null): MarkupNode => ({ type: 'codeblock', text, lang });
const b = (...children: MarkupNode[]) => ({ type: 'strong', children }) as MarkupNode;
const em = (...children: MarkupNode[]) => ({ type: 'em', children }) as MarkupNode;
const link = (text: string, href = text): MarkupNode => ({ type: 'link', text, href });
const me = (text: string): MarkupNode => ({ type: 'mention', text, kind: 'me' });
const room = (text: string): MarkupNode => ({ type: 'mention', text, kind: 'room' });

type Case = [string, MarkupNode[]];

function table(name: string, cases: Case[]) {
  describe(name, () => {
    it.each(cases)('%j', (input, expected) => {
      expect(parseMessage(input, 'alice')).toEqual(expected);
    });
  });
}

table('plain text', [
  ['', []],
  ['hello', [t('hello')]],
  ['two\nlines', [t('two\nlines')]],
  ['2 * 3 * 4', [t('2 * 3 * 4')]],
  ['a * b', [t('a * b')]],
  ['snake_case_name and __init__', [t('snake_case_name and __init__')]],
  ['* a list\n* item', [t('* a list\n* item')]],
]);

table('raw HTML is text', [
  ['<b>bold</b>', [t('<b>bold</b>')]],
  ['<script>alert(1)</script>', [t('<script>alert(1)</script>')]],
  ['<img src=x onerror="alert(1)">', [t('<img src=x onerror="alert(1)">')]],
  ['**<i>x</i>**', [b(t('<i>x</i>'))]],
  ['&lt;b&gt; &amp;', [t('&lt;b&gt; &amp;')]],
]);

table('bold and italics', [
  ['**bold**', [b(t('bold'))]],
  ['*it*', [em(t('it'))]],
  ['_it_', [em(t('it'))]],
  ['a **b** c', [t('a '), b(t('b')), t(' c')]],
  ['***both***', [b(em(t('both')))]],
  ['**bold _and it_**', [b(t('bold '), em(t('and it')))]],
  ['*it **and bold***', [em(t('it '), b(t('and bold')))]],
  ['**multi\nline**', [b(t('multi\nline'))]],
  ['a*b*c', [t('a'), em(t('b')), t('c')]],
  ['a_b_c', [t('a_b_c')]],
  ['(_x_)', [t('('), em(t('x')), t(')')]],
]);

table('unbalanced and odd markers stay text', [
  ['**open', [t('**open')]],
  ['close**', [t('close**')]],
  ['*a', [t('*a')]],
  ['**a*', [t('**a*')]],
  ['*a**', [em(t('a')), t('*')]],
  ['** not bold **', [t('** not bold **')]],
  ['****', [t('****')]],
  ['**', [t('**')]],
  ['*', [t('*')]],
  ['_', [t('_')]],
  ['a ** b', [t('a ** b')]],
  ['*****x*****', [t('*****x*****')]],
  ['__x__', [t('__x__')]],
  // crossed markers: the first closer wins, the marker opened after its opener is text
  ['*a _b* c_', [em(t('a _b')), t(' c_')]],
  ['**a *b** c*', [b(t('a *b')), t(' c*')]],
  ['*a **b* c**', [em(t('a **b')), t(' c**')]],
]);

table('inline code', [
  ['`x`', [code('x')]],
  ['run `npm ci` now', [t('run '), code('npm ci'), t(' now')]],
  ['`**not bold**`', [code('**not bold**')]],
  ['`<script>`', [code('<script>')]],
  ['`https://example.com`', [code('https://example.com')]],
  ['`@alice`', [code('@alice')]],
  ['``', [t('``')]],
  ['`open', [t('`open')]],
  ['`a` and `b', [code('a'), t(' and `b')]],
  ['**see `x` now**', [b(t('see '), code('x'), t(' now'))]],
  ['`*`a*`*`', [code('*'), t('a*'), code('*')]],
]);

table('code blocks', [
  ['```\nconst a = 1;\n```', [block('const a = 1;')]],
  ['```ts\nconst a: number = 1;\n```', [block('const a: number = 1;', 'ts')]],
  ['```one line```', [block('one line')]],
  ['before\n```\nx\n```\nafter', [t('before'), block('x'), t('after')]],
  ['```\n**no** _markup_ `here` https://example.com @alice <b>\n```', [block('**no** _markup_ `here` https://example.com @alice <b>')]],
  ['```\nopen only', [t('```\nopen only')]],
  ['```a``` and ```', [block('a'), t(' and ```')]],
  ['```\n  indented\n\n  kept\n```', [block('  indented\n\n  kept')]],
]);

table('links: http and https only', [
  ['https://example.com', [link('https://example.com', 'https://example.com/')]],
  ['see http://example.com/a?b=1#c', [t('see '), link('http://example.com/a?b=1#c')]],
  ['HTTPS://EXAMPLE.COM/X', [link('HTTPS://EXAMPLE.COM/X', 'https://example.com/X')]],
  ['javascript:alert(1)', [t('javascript:alert(1)')]],
  ['JavaScript://example.com/%0aalert(1)', [t('JavaScript://example.com/%0aalert(1)')]],
  ['data:text/html,<script>alert(1)</script>', [t('data:text/html,<script>alert(1)</script>')]],
  ['ftp://example.com file:///etc/passwd', [t('ftp://example.com file:///etc/passwd')]],
  ['xhttps://example.com', [t('xhttps://example.com')]],
  ['https://', [t('https://')]],
  ['https://.', [t('https://.')]],
  ['<https://example.com/a>', [t('<'), link('https://example.com/a'), t('>')]],
  ['"https://example.com/a"', [t('"'), link('https://example.com/a'), t('"')]],
  ['https://example.com/"onmouseover="x', [link('https://example.com/'), t('"onmouseover="x')]],
  ['https://example.com/<script>', [link('https://example.com/'), t('<script>')]],
  ['two https://a.example https://b.example', [t('two '), link('https://a.example', 'https://a.example/'), t(' '), link('https://b.example', 'https://b.example/')]],
  ['https://example.com/?u=https://b.example', [link('https://example.com/?u=https://b.example')]],
]);

table('links: trailing punctuation', [
  ['Look: https://example.com/a.', [t('Look: '), link('https://example.com/a'), t('.')]],
  ['https://example.com/a, then', [link('https://example.com/a'), t(', then')]],
  ['https://example.com/a?!', [link('https://example.com/a'), t('?!')]],
  ['(see https://example.com/a)', [t('(see '), link('https://example.com/a'), t(')')]],
  ['https://en.wikipedia.org/wiki/Foo_(bar)', [link('https://en.wikipedia.org/wiki/Foo_(bar)')]],
  ['(https://en.wikipedia.org/wiki/Foo_(bar)).', [t('('), link('https://en.wikipedia.org/wiki/Foo_(bar)'), t(').')]],
  ['[https://example.com/a]', [t('['), link('https://example.com/a'), t(']')]],
  ["'https://example.com/a'", [t("'"), link('https://example.com/a'), t("'")]],
  ['**https://example.com/a**', [b(link('https://example.com/a'))]],
  ['_https://example.com/a_b_', [em(link('https://example.com/a_b'))]],
  ['xhttps://example.com but _https://example.com_', [t('xhttps://example.com but '), em(link('https://example.com', 'https://example.com/'))]],
  ['https://example.com/a_b_c', [link('https://example.com/a_b_c')]],
  ['https://example.com/*x*', [link('https://example.com/*x'), t('*')]],
]);

table('mentions of me and of the room', [
  ['@alice hi', [me('@alice'), t(' hi')]],
  ['hi @ALICE!', [t('hi '), me('@ALICE'), t('!')]],
  ['@room: standup', [room('@room'), t(': standup')]],
  ['@bob and @alice2 and alice@example.com', [t('@bob and @alice2 and alice@example.com')]],
  ['**@alice**', [b(me('@alice'))]],
  ['https://example.com/@alice', [link('https://example.com/@alice')]],
  ['`@room`', [code('@room')]],
  ['@alice`x`', [me('@alice'), code('x')]],
]);

describe('no username', () => {
  it('still finds @room', () => {
    expect(parseMessage('@alice @room', null)).toEqual([t('@alice '), room('@room')]);
  });
});

describe('very long input: every pass is linear', () => {
  // A quadratic parser takes minutes on these (10^10 steps); a linear one, milliseconds.
  const N = 100_000;
  const nasty: Array<[string, string]> = [
    ['openers without closers', '*a '.repeat(N)],
    ['alternating openers, one closer at the end', '*x _'.repeat(N) + 'x*'],
    ['closers with no opener', 'a* '.repeat(N)],
    ['openers of one kind, closers of another', '_a '.repeat(N) + 'b* '.repeat(N)],
    ['many code spans', '`a` '.repeat(N)],
    ['backticks without partner after code spans', '`a` '.repeat(N) + '`'],
    ['many fences', '```a``` '.repeat(N / 2)],
    ['one unclosed fence', '```' + 'x'.repeat(N)],
    ['many links', 'https://a.example/x '.repeat(N / 4)],
    ['one long link of brackets', 'https://a.example/' + ')'.repeat(N)],
    ['https:// repeated', 'https://'.repeat(N)],
    ['mentions', '@alice @room '.repeat(N / 4)],
    ['at signs', '@'.repeat(N)],
    ['a long run of stars', '*'.repeat(N)],
    ['nested openers then closers', '**_*'.repeat(N / 4) + 'x' + '*_**'.repeat(N / 4)],
  ];
  it.each(nasty)('%s', (_name, input) => {
    const out = parseMessage(input, 'alice');
    expect(out.length).toBeGreaterThan(0);
  });
});
