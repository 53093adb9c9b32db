/**
 * The small, safe subset of markdown a message may use, parsed into a tree (rendered by
 * `Markup.tsx` as React elements, never as HTML): code blocks (```…```), inline code (`…`), bold
 * (**…**), italics (*…* or _…_), http(s) links and mentions of the reader or of the room. Anything
 * else, HTML included, is text. Every pass is linear in the length of the message.
 */
import { mentionKind, mentionPattern } from '@chat/use-chat';

export type InlineNode =
  | { type: 'text'; text: string }
  | { type: 'code'; text: string }
  | { type: 'link'; href: string; text: string }
  | { type: 'mention'; text: string; kind: 'me' | 'room' }
  | { type: 'strong' | 'em'; children: InlineNode[] };

export type MarkupNode = InlineNode | { type: 'codeblock'; text: string; lang: string | null };

const FENCE = '```';
/** "```ts" on the fence's own line names the language; anything else is code. */
const FENCE_LANG = /^([A-Za-z0-9_+#.-]{1,32})\n/;

/** The tree of `content` as seen by `username` (whose mentions are told apart from @room). */
export function parseMessage(content: string, username?: string | null): MarkupNode[] {
  const out: MarkupNode[] = [];
  const mentions = mentionPattern(username);
  let i = 0;
  for (;;) {
    const open = content.indexOf(FENCE, i);
    const close = open < 0 ? -1 : content.indexOf(FENCE, open + FENCE.length);
    if (close < 0) break;
    // The line breaks around a fence belong to it: the block is a line of its own anyway.
    pushAll(out, parseInline(trimEnd(content.slice(i, open), '\n'), mentions, username));
    out.push(codeBlock(content.slice(open + FENCE.length, close)));
    i = close + FENCE.length;
    if (content[i] === '\n') i++;
  }
  pushAll(out, parseInline(content.slice(i), mentions, username));
  return out;
}

function codeBlock(inner: string): MarkupNode {
  const lang = FENCE_LANG.exec(inner);
  const body = lang ? inner.slice(lang[0].length) : inner.replace(/^\n/, '');
  return { type: 'codeblock', text: trimEnd(body, '\n'), lang: lang ? lang[1] : null };
}

function trimEnd(s: string, ch: string): string {
  return s.endsWith(ch) ? s.slice(0, -ch.length) : s;
}

function pushAll(out: MarkupNode[], nodes: MarkupNode[]) {
  for (const n of nodes) push(out, n);
}

/** Appends `node`, joining it to a text node before it. */
function push(out: MarkupNode[], node: MarkupNode) {
  const last = out.at(-1);
  if (node.type === 'text' && last?.type === 'text') out[out.length - 1] = { type: 'text', text: last.text + node.text };
  else if (node.type !== 'text' || node.text) out.push(node);
}

// ----- atoms: code spans, links and mentions, never parsed further ------------------------------

interface Atom {
  start: number;
  end: number;
  node: InlineNode;
}

function findAtoms(s: string, mentions: RegExp, username?: string | null): Atom[] {
  const atoms: Atom[] = [];
  let i = 0;
  for (;;) {
    // A backtick with no partner ends the code spans: any later one would have been its partner.
    const open = s.indexOf('`', i);
    const close = open < 0 ? -1 : s.indexOf('`', open + 1);
    if (close < 0) break;
    if (close === open + 1) {
      // `` is two backticks, not empty code
      findLinksAndMentions(s, i, close + 1, atoms, mentions, username);
    } else {
      findLinksAndMentions(s, i, open, atoms, mentions, username);
      atoms.push({ start: open, end: close + 1, node: { type: 'code', text: s.slice(open + 1, close) } });
    }
    i = close + 1;
  }
  findLinksAndMentions(s, i, s.length, atoms, mentions, username);
  return atoms;
}

function findLinksAndMentions(s: string, from: number, to: number, atoms: Atom[], mentions: RegExp, username?: string | null) {
  let i = from;
  for (const link of findLinks(s, from, to)) {
    findMentions(s, i, link.start, atoms, mentions, username);
    atoms.push(link);
    i = link.end;
  }
  findMentions(s, i, to, atoms, mentions, username);
}

function findMentions(s: string, from: number, to: number, atoms: Atom[], mentions: RegExp, username?: string | null) {
  if (from >= to) return;
  // Sliced, so that the whole-word rule sees the boundary of a code span or link as an edge.
  for (const m of s.slice(from, to).matchAll(mentions)) {
    atoms.push({
      start: from + m.index,
      end: from + m.index + m[0].length,
      node: { type: 'mention', text: m[0], kind: mentionKind(m[1], username) },
    });
  }
}

const LINK_START = /https?:\/\//gi;
/** Ends a link: what cannot be in a URL, and quotes or brackets around one. */
const LINK_STOP = /[\s<>"`]/;
/** Punctuation that ends a sentence rather than the link when it comes last. */
const TRAILING = new Set([...'.,:;!?\'"*_~']);
const CLOSERS: Record<string, string> = { ')': '(', ']': '[', '}': '{' };
const WORD_CHAR = /[\p{L}\p{N}_]/u;
const LETTER_OR_DIGIT = /[\p{L}\p{N}]/u;

/** The http(s) links in s[from, to). */
function findLinks(s: string, from: number, to: number): Atom[] {
  const links: Atom[] = [];
  const part = s.slice(from, to); // a search of the whole message per part would be quadratic
  for (const m of part.matchAll(LINK_START)) {
    const start = m.index;
    if (start > 0 && LETTER_OR_DIGIT.test(part[start - 1])) continue; // "xhttps://" is not a link
    if (links.length && start < links.at(-1)!.end - from) continue; // inside the link before
    let end = start + m[0].length;
    while (end < part.length && !LINK_STOP.test(part[end])) end++;
    end = trimLink(part, start + m[0].length, end);
    const href = httpHref(part.slice(start, end));
    if (href) links.push({ start: from + start, end: from + end, node: { type: 'link', href, text: part.slice(start, end) } });
  }
  return links;
}

/** Where the link in s[.., end) really ends: without sentence punctuation or a bracket it did not open. */
function trimLink(s: string, bodyStart: number, end: number): number {
  const balance: Record<string, number> = { '(': 0, '[': 0, '{': 0 };
  for (let i = bodyStart; i < end; i++) {
    const c = s[i];
    if (c in balance) balance[c]++;
    else if (c in CLOSERS) balance[CLOSERS[c]]--;
  }
  while (end > bodyStart) {
    const c = s[end - 1];
    if (TRAILING.has(c)) end--;
    else if (c in CLOSERS && balance[CLOSERS[c]] < 0) {
      balance[CLOSERS[c]]++;
      end--;
    } else break;
  }
  return end;
}

/** The URL a link goes to: http or https with a host, or null. */
function httpHref(text: string): string | null {
  try {
    const url = new URL(text);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.hostname ? url.href : null;
  } catch {
    return null;
  }
}

// ----- emphasis ------------------------------------------------------------------------------------

type Marker = '*' | '**' | '_';

interface Frame {
  marker: Marker | null;
  children: InlineNode[];
}

const SPACE = /\s/u;
/** Longer runs of * (or of _ than one) are text: "****" is not an empty bold. */
const MAX_RUN: Record<string, number> = { '*': 3, _: 1 };

/**
 * Inline markup of a text without code blocks. Emphasis is matched with a stack of open markers:
 * a closing marker closes the nearest open one of its kind, turning any opened after it (and not
 * closed) back into text; openers left at the end are text. Each marker kind keeps the stack
 * positions of its open frames, so a closer finds its opener without scanning the stack.
 */
export function parseInline(s: string, mentions: RegExp, username?: string | null): InlineNode[] {
  const atoms = findAtoms(s, mentions, username);
  const stack: Frame[] = [{ marker: null, children: [] }];
  const openAt: Record<Marker, number[]> = { '*': [], '**': [], _: [] };
  let textStart = 0;
  let next = 0; // the next atom

  const flush = (upto: number) => {
    if (upto > textStart) push(stack.at(-1)!.children, { type: 'text', text: s.slice(textStart, upto) });
  };

  /** Closes the frame at `at`: frames above it are text again, it becomes strong/em in its parent. */
  const close = (at: number) => {
    const frame = stack[at];
    for (const above of stack.splice(at + 1)) {
      openAt[above.marker!].pop();
      pushAll(frame.children, [{ type: 'text', text: above.marker! }, ...above.children]);
    }
    stack.pop();
    openAt[frame.marker!].pop();
    push(stack.at(-1)!.children, { type: frame.marker === '**' ? 'strong' : 'em', children: frame.children });
  };

  let i = 0;
  while (i < s.length) {
    if (next < atoms.length && atoms[next].start === i) {
      flush(i);
      push(stack.at(-1)!.children, atoms[next].node);
      i = textStart = atoms[next].end;
      next++;
      continue;
    }
    const c = s[i];
    if (c !== '*' && c !== '_') {
      i++;
      continue;
    }
    let j = i;
    while (j < s.length && s[j] === c) j++;
    const before = s[i - 1];
    const after = s[j];
    let canOpen = after !== undefined && !SPACE.test(after);
    let canClose = before !== undefined && !SPACE.test(before);
    if (c === '_') {
      // snake_case_names are not emphasis
      canOpen &&= before === undefined || !WORD_CHAR.test(before);
      canClose &&= after === undefined || !WORD_CHAR.test(after);
    }
    if (j - i > MAX_RUN[c] || !(canOpen || canClose)) {
      i = j;
      continue;
    }
    flush(i);
    let k = i;
    while (canClose && k < j) {
      const at = closable(openAt, c, j - k);
      if (at < 0) break;
      k += stack[at].marker!.length;
      close(at);
    }
    while (canOpen && k < j) {
      const marker: Marker = c === '_' ? '_' : j - k >= 2 ? '**' : '*';
      openAt[marker].push(stack.length);
      stack.push({ marker, children: [] });
      k += marker.length;
    }
    textStart = k; // what neither closed nor opened anything stays text
    i = j;
  }
  flush(s.length);
  const root = stack[0];
  for (const open of stack.slice(1)) pushAll(root.children, [{ type: 'text', text: open.marker! }, ...open.children]);
  return root.children;
}

/**
 * The stack position of the open marker a run of `run` characters `c` closes, or -1: the innermost
 * one as long as the run ("**a *b** c*" is bold), else the innermost that fits ("***" closes "*" then "**").
 */
function closable(openAt: Record<Marker, number[]>, c: string, run: number): number {
  if (c === '_') return openAt._.at(-1) ?? -1;
  const single = openAt['*'].at(-1) ?? -1;
  const double = run >= 2 ? (openAt['**'].at(-1) ?? -1) : -1;
  if (run === 2 && double >= 0) return double;
  return Math.max(single, double);
}
