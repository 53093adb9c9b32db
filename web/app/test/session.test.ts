import { afterEach, describe, expect, it } from 'vitest';
import { loadPrefs, savePrefs, type Prefs } from '../src/session';

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

const shared = new MemoryStorage();
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
