/**
 * Pure reducers for stored membership (PROTOCOL.md §6, §8, §11): the rooms `welcome` and
 * `my_rooms` say I am a member of, `invited`, `left` (also with the reason "removed"), and the
 * `users` search. Like reducers.ts: `(state, frame, …) -> state`, no I/O; what a frame makes the
 * client send (joins, history pages) is done by membership.ts around these calls.
 */
import type { InvitedFrame, MemberRoom, RoomInfo, UsersFrame } from './protocol';
import { newRoom } from './rooms';
import type { ChatState, RoomState } from './state';
import { withUsers } from './reducers';

/** `state` without the room `name`: neither in `joined` nor its unsent messages (they cannot be sent any more). */
export function withoutRoom(state: ChatState, name: string): ChatState {
  if (!state.joined[name]) return state;
  const joined = { ...state.joined };
  delete joined[name];
  const outbox = state.outbox.filter((p) => !(p.kind === 'message' && p.room === name));
  return { ...state, joined, outbox: outbox.length === state.outbox.length ? state.outbox : outbox };
}

/** The rooms list with `room` marked as one I am (not) a member of; the list itself when nothing changes. */
function withMemberFlag(rooms: RoomInfo[], room: string, member: boolean): RoomInfo[] {
  const i = rooms.findIndex((r) => r.name === room);
  if (i < 0 || rooms[i].member === member) return rooms;
  const next = rooms.slice();
  next[i] = { ...rooms[i], member };
  return next;
}

/**
 * The rooms the server says I am a member of (`welcome.rooms`, a `my_rooms` page) in `joined`:
 * each one kept as it is (its messages stay) or added. When `complete` (the whole list: a
 * `welcome` that did not fill its 200), a room not in it is dropped unless in `keep` (a join or
 * creation asked for on this client and not acknowledged yet): it was left, or I was removed,
 * while this client was away.
 */
export function reduceMemberRooms(state: ChatState, rooms: MemberRoom[], keep: ReadonlySet<string>, complete: boolean): ChatState {
  const listed = new Set(rooms.map((r) => r.room));
  let s = state;
  if (complete) {
    for (const name of Object.keys(state.joined)) if (!listed.has(name) && !keep.has(name)) s = withoutRoom(s, name);
  }
  let joined: Record<string, RoomState> | null = null;
  for (const r of rooms) {
    const had = s.joined[r.room];
    if (had && had.private === r.private) continue;
    joined ??= { ...s.joined };
    joined[r.room] = had ? { ...had, private: r.private } : newRoom(r.room, r.private);
  }
  return joined ? { ...s, joined } : s;
}

/** `invited`: I was made a member of a room; it is listed at once (its `join_ack` follows). */
export function reduceInvited(state: ChatState, frame: InvitedFrame): ChatState {
  const s = frame.data.by ? withUsers(state, [frame.data.by]) : state;
  const had = s.joined[frame.room];
  const room = had ? { ...had, private: frame.data.private } : newRoom(frame.room, frame.data.private);
  return { ...s, joined: { ...s.joined, [frame.room]: room }, rooms: withMemberFlag(s.rooms, frame.room, true) };
}

/**
 * `left` of a room still listed: my membership ended elsewhere (another device left it, or the
 * owner removed me). The room goes, with its unsent messages.
 */
export function reduceLeftElsewhere(state: ChatState, room: string): ChatState {
  const s = withoutRoom(state, room);
  const rooms = withMemberFlag(s.rooms, room, false);
  return rooms === s.rooms ? s : { ...s, rooms };
}

/**
 * `users`: the answer to the search for `query` (answers come in the order asked). It is shown
 * only while it answers the latest search; who is online is remembered either way.
 */
export function reduceUsers(state: ChatState, frame: UsersFrame, query: string | undefined): ChatState {
  let s = withUsers(state, frame.data);
  const userOnline = { ...s.userOnline };
  for (const u of frame.data) userOnline[u.userId] = u.online;
  s = { ...s, userOnline };
  if (query === undefined || s.people?.query !== query) return s;
  return { ...s, people: { query, results: frame.data } };
}
