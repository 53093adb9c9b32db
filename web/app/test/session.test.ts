import { afterEach, describe, expect, it } from 'vitest';
import { loadPrefs, loadSession, savePrefs, saveSession, type Prefs, type Session } from '../src/session';

/** A Web Storage in memory: the browser's localStorage (shared by tabs) or a tab's sessionStorage. */
class MemoryStorage {
  private items = new Map<string, string>();
  getItem(key: string): string | null {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.items.set(key, value);
  }
  removeItem(key: string): void {
    this.items.delete(key);
  }
}

let shared = new MemoryStorage();
const g = globalThis as unknown as { localStorage?: MemoryStorage; sessionStorage?: MemoryStorage };

/** Runs `f` in a tab: the browser's shared localStorage, and the tab's own sessionStorage. */
function inTab<T>(tab: MemoryStorage, f: () => T): T {
  g.localStorage = shared;
  g.sessionStorage = tab;
  return f();
}

const prefs = (active: string): Prefs => ({ rooms: ['general', 'hist'], dms: [{ userId: 2, username: 'bob' }], active, owned: [] });

afterEach(() => {
  delete g.localStorage;
  delete g.sessionStorage;
  shared = new MemoryStorage();
});

const alice: Session = { token: 'a.b.c', userId: 1, username: 'alice' };

describe('the session', () => {
  it('is the browser’s: a new tab opens signed in, and signing out in one tab signs out every tab', () => {
    inTab(new MemoryStorage(), () => saveSession(alice));
    const second = new MemoryStorage();
    expect(inTab(second, loadSession)).toEqual(alice);
    inTab(second, () => saveSession(null));
    expect(inTab(new MemoryStorage(), loadSession)).toBeNull();
  });

  it('kept per tab by the page before, is taken over by the browser at the next load', () => {
    const tab = new MemoryStorage();
    tab.setItem('chat.session', JSON.stringify(alice));
    expect(inTab(tab, loadSession)).toEqual(alice);
    expect(tab.getItem('chat.session')).toBeNull();
    expect(inTab(new MemoryStorage(), loadSession)).toEqual(alice);
  });

  it('is none when what is stored is not a session', () => {
    shared.setItem('chat.session', '{"token": 5}');
    expect(inTab(new MemoryStorage(), loadSession)).toBeNull();
  });
});

describe('the open conversation', () => {
  it('is the tab’s own after a reload, while a new tab opens the one opened last anywhere', () => {
    const first = new MemoryStorage();
    const second = new MemoryStorage();
    inTab(first, () => savePrefs(1, prefs('d:2')));
    inTab(second, () => savePrefs(1, prefs('r:hist')));
    expect(inTab(first, () => loadPrefs(1).active)).toBe('d:2');
    expect(inTab(second, () => loadPrefs(1).active)).toBe('r:hist');
    expect(inTab(new MemoryStorage(), () => loadPrefs(1))).toEqual(prefs('r:hist'));
  });
});
