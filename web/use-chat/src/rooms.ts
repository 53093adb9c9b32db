/**
 * Pure helpers on rooms and DM conversations: fresh states, who is online, the rooms list's counts.
 *
 * None of them changes its arguments, and most return their input itself when nothing changes, so
 * that the state snapshot is only replaced when something did.
 */
import type { RoomInfo, UserId, UserRef } from './protocol';
import type { DmState, RoomState } from './state';

/** A room's online count after a presence event that changes it by `delta`, never below its listed users. */
export function onlineAfter(r: RoomState, users: UserRef[], delta: number): number | null {
  return r.online === null ? null : Math.max(users.length, r.online + delta);
}

/**
 * The rooms list with `room`'s online count set to `online` (a room missing from it is added when
 * `add`, in name order, as the server sorts it). Returns `rooms` itself when nothing changes.
 */
export function withRoomOnline(rooms: RoomInfo[], room: string, online: number, add = false): RoomInfo[] {
  const i = rooms.findIndex((x) => x.name === room);
  if (i < 0) {
    if (!add) return rooms;
    const at = rooms.findIndex((x) => x.name > room);
    const next = rooms.slice();
    next.splice(at < 0 ? rooms.length : at, 0, { name: room, description: '', online });
    return next;
  }
  if (rooms[i].online === online) return rooms;
  const next = rooms.slice();
  next[i] = { ...rooms[i], online };
  return next;
}

/**
 * A `rooms` frame's list, where a joined room counts at least the users its own list shows online
 * (the server may answer from a list read a moment before one of their joins).
 */
export function withListedUsers(rooms: RoomInfo[], joined: Record<string, RoomState>): RoomInfo[] {
  return rooms.map((info) => {
    const r = joined[info.name];
    if (!r || r.status !== 'joined') return info;
    const online = typeof info.online === 'number' ? Math.max(info.online, r.users.length) : r.users.length;
    return online === info.online ? info : { ...info, online };
  });
}

/** Joined rooms whose online count the server sends, updated from the rooms list (crowded rooms get no presence events). */
export function withOnlineCounts(joined: Record<string, RoomState>, rooms: RoomInfo[]): Record<string, RoomState> {
  let next = joined;
  for (const info of rooms) {
    const r = joined[info.name];
    if (!r || r.online === null || r.status !== 'joined' || typeof info.online !== 'number') continue;
    const online = Math.max(r.users.length, info.online);
    if (online !== r.online) next = { ...next, [info.name]: { ...r, online } };
  }
  return next;
}

/** Joined rooms marked private or not as the rooms list says (a room joined on another device is listed before it is known). */
export function withPrivacy(joined: Record<string, RoomState>, rooms: RoomInfo[]): Record<string, RoomState> {
  let next = joined;
  for (const info of rooms) {
    const r = next[info.name];
    if (r && typeof info.private === 'boolean' && info.private !== r.private) next = { ...next, [info.name]: { ...r, private: info.private } };
  }
  return next;
}

/** The state of a room just asked to join: nothing loaded yet. */
export function newRoom(name: string, isPrivate = false): RoomState {
  return {
    name,
    private: isPrivate,
    members: null,
    owner: null,
    status: 'joining',
    messages: [],
    users: [],
    online: null,
    typing: [],
    historyLoaded: false,
    hasMore: true,
    loadingOlder: false,
  };
}

/** The state of a conversation just opened or listed: nothing loaded yet. */
export function newDm(userId: UserId, username: string): DmState {
  return { userId, username, messages: [], listedLastId: null, historyLoaded: false, hasMore: true, loadingOlder: false, typing: [] };
}

/** `users` with each user once, in order of first appearance, as plain `{ userId, username }` (the last entry's name). */
export function dedupeUsers(users: UserRef[]): UserRef[] {
  const m = new Map<number, UserRef>();
  for (const u of users) m.set(u.userId, { userId: u.userId, username: u.username });
  return [...m.values()];
}
