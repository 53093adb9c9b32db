export interface Session {
  token: string;
  userId: number;
  username: string;
}

// Kept in localStorage, which every tab of the browser shares: a new tab opens signed in,
// as people expect of a chat page, and signing out in one tab signs out all of them
// (onSessionChangedElsewhere). Pages of the version before kept it per tab, in sessionStorage.
const KEY = 'chat.session';

function parseSession(raw: string | null): Session | null {
  if (!raw) return null;
  try {
    const s = JSON.parse(raw) as Session;
    return typeof s.token === 'string' && typeof s.userId === 'number' ? s : null;
  } catch {
    return null;
  }
}

export function loadSession(): Session | null {
  try {
    const shared = parseSession(localStorage.getItem(KEY));
    if (shared) return shared;
    const tabs = parseSession(sessionStorage.getItem(KEY)); // a tab signed in before the change
    if (tabs) saveSession(tabs);
    return tabs;
  } catch {
    return null;
  }
}

export function saveSession(s: Session | null): void {
  try {
    if (s) localStorage.setItem(KEY, JSON.stringify(s));
    else localStorage.removeItem(KEY);
    sessionStorage.removeItem(KEY);
  } catch {
    /* storage disabled: the session lives in memory only */
  }
}

/** Calls `changed` with the stored session each time another tab signs in or out (the
 * `storage` event, which a tab never gets for its own writes); returns the unsubscribe. */
export function onSessionChangedElsewhere(changed: (s: Session | null) => void): () => void {
  const listener = (e: StorageEvent) => {
    if (e.key === KEY || e.key === null) changed(parseSession(e.key === null ? null : e.newValue));
  };
  window.addEventListener('storage', listener);
  return () => window.removeEventListener('storage', listener);
}

export class LoginError extends Error {}

/** POST /api/login → {token, userId, username}. */
export async function login(username: string, password: string): Promise<Session> {
  let res: Response;
  try {
    res = await fetch('/api/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username, password }),
    });
  } catch {
    throw new LoginError('Cannot reach the server. Check your connection and try again.');
  }
  let body: Record<string, unknown> = {};
  try {
    body = await res.json();
  } catch {
    /* non-JSON error page */
  }
  if (res.status === 401) throw new LoginError('Wrong username or password.');
  // LOGIN_ENABLED=false on the server: tokens come from another backend.
  if (res.status === 404) throw new LoginError('Sign-in is not available on this server.');
  if (!res.ok) {
    throw new LoginError(typeof body.error === 'string' ? body.error : `Sign-in failed (HTTP ${res.status}).`);
  }
  if (typeof body.token !== 'string' || typeof body.userId !== 'number') {
    throw new LoginError('Unexpected answer from the server.');
  }
  return { token: body.token, userId: body.userId, username: String(body.username ?? username) };
}

export interface Prefs {
  rooms: string[];
  dms: Array<{ userId: number; username: string }>;
  /** the conversation open last: `r:<room>` or `d:<userId>` */
  active: string | null;
  /**
   * the rooms created on this device (their owner may remove members; the server says no one else
   * may): for servers whose join_ack does not name the owner (ours does: `RoomState.owner`)
   */
  owned: string[];
}

const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x: unknown): x is string => typeof x === 'string') : []);

/** Whether this device remembers anything of the user: not their first visit here. */
export function hasPrefs(userId: number): boolean {
  try {
    return localStorage.getItem(`chat.prefs.${userId}`) !== null;
  } catch {
    return false;
  }
}

/** This tab's open conversation, kept across its reloads (the other tabs of the user have their own). */
const activeKey = (userId: number) => `chat.active.${userId}`;

/**
 * Per-user preferences kept across reloads: joined rooms, DM peers, the open conversation, the rooms
 * created here. The open conversation is this tab's, after a reload; a new tab opens the one opened
 * last in any tab.
 */
export function loadPrefs(userId: number): Prefs {
  let prefs: Prefs = { rooms: [], dms: [], active: null, owned: [] };
  try {
    const raw = localStorage.getItem(`chat.prefs.${userId}`);
    if (raw) {
      const p = JSON.parse(raw);
      prefs = {
        rooms: Array.isArray(p.rooms) ? p.rooms.filter((r: unknown) => typeof r === 'string') : ['general'],
        dms: Array.isArray(p.dms) ? p.dms.filter((d: { userId?: unknown }) => typeof d?.userId === 'number') : [],
        active: typeof p.active === 'string' ? p.active : null,
        owned: strings(p.owned),
      };
    }
  } catch {
    /* ignore */
  }
  try {
    const mine = sessionStorage.getItem(activeKey(userId));
    if (mine) prefs.active = mine;
  } catch {
    /* ignore */
  }
  return prefs;
}

export function savePrefs(userId: number, prefs: Prefs): void {
  try {
    localStorage.setItem(`chat.prefs.${userId}`, JSON.stringify(prefs));
  } catch {
    /* ignore */
  }
  try {
    if (prefs.active) sessionStorage.setItem(activeKey(userId), prefs.active);
    else sessionStorage.removeItem(activeKey(userId));
  } catch {
    /* ignore */
  }
}

/**
 * What is being written in each conversation (by `targetKey`), not sent yet: kept while switching
 * conversations, across a reload and a new sign-in after the session expired. Per tab, like the
 * unsent messages; forgotten on signing out (`clearDrafts`).
 */
export function loadDraft(userId: number, conversation: string): string {
  return loadDrafts(userId)[conversation] ?? '';
}

export function saveDraft(userId: number, conversation: string, text: string): void {
  const drafts = loadDrafts(userId);
  if (text) drafts[conversation] = text;
  else delete drafts[conversation];
  try {
    if (Object.keys(drafts).length) sessionStorage.setItem(draftsKey(userId), JSON.stringify(drafts));
    else sessionStorage.removeItem(draftsKey(userId));
  } catch {
    /* full or unavailable: the draft lives as long as its composer */
  }
}

export function clearDrafts(userId: number): void {
  try {
    sessionStorage.removeItem(draftsKey(userId));
  } catch {
    /* ignore */
  }
}

const draftsKey = (userId: number) => `chat.drafts.${userId}`;

function loadDrafts(userId: number): Record<string, string> {
  try {
    const drafts: unknown = JSON.parse(sessionStorage.getItem(draftsKey(userId)) ?? '{}');
    if (typeof drafts !== 'object' || drafts === null || Array.isArray(drafts)) return {};
    return Object.fromEntries(Object.entries(drafts).filter(([, text]) => typeof text === 'string'));
  } catch {
    return {};
  }
}
