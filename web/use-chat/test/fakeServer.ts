/**
 * A small in-process implementation of the server side of PROTOCOL.md, on the `ws` package,
 * for the client's tests. It keeps its "database" across restart() so that tests can drop
 * connections or restart the server mid-conversation, and it records every frame it receives.
 * Like the real server, it speaks the extensions of the server's README (`conversations`, errors
 * naming their request, `join_ack.data.online`) unless `extensions` is false.
 */
import { AddressInfo } from 'node:net';
import { WebSocketServer, WebSocket } from 'ws';
import type { DirectMessage, RoomMessage, UserRef } from '../src/protocol';

export interface Conn {
  ws: WebSocket;
  id: number;
  user: UserRef | null;
  rooms: Set<string>;
  closeCode?: number;
  /** closes the connection with 4001 when its token expires, like the real server */
  expiryTimer?: ReturnType<typeof setTimeout>;
}

/**
 * What to do with a received frame: 'ignore' it (lost on the way), 'drop-before' handling it,
 * handle it then 'drop-after' (its answers may still get out), or handle it but cut the connection
 * first so that its answers are lost ('lose-reply': stored, never acknowledged).
 */
export type FrameHook = (
  conn: Conn,
  frame: Record<string, unknown>,
) => 'drop-before' | 'drop-after' | 'lose-reply' | 'ignore' | void;

type AnyFrame = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export class FakeChatServer {
  private wss: WebSocketServer | null = null;
  port = 0;
  /** valid tokens */
  readonly tokens = new Map<string, UserRef>();
  /** when tokens expire (epoch ms); a token not listed never does */
  readonly tokenExpiry = new Map<string, number>();
  readonly roomMsgs: RoomMessage[] = [];
  readonly dms: DirectMessage[] = [];
  /** the edits, deletes and reactions of DMs (`dmEvent`), with the conversation's two users */
  readonly dmEvents: Array<{ pair: [number, number]; frame: AnyFrame }> = [];
  /** the most events a DM catch-up answer carries (DM_CATCH_UP_EVENTS): past it, `more` */
  dmCatchUpEvents = 500;
  readonly rooms = new Map<string, string>([['general', 'Everyone']]);
  private nextId = 1;
  private readonly byClientId = new Map<string, RoomMessage | DirectMessage>();
  readonly conns = new Set<Conn>();
  private connSeq = 0;
  /** every frame received, with the connection it came on */
  readonly received: Array<{ conn: number; user: number | null; frame: AnyFrame }> = [];
  /** every connection ever accepted */
  connections = 0;
  /** close codes of the connections the clients closed */
  readonly clientCloseCodes: number[] = [];
  onFrame: FrameHook | null = null;
  /** when true, the server reads but answers nothing (not even pong) */
  mute = false;
  /** per-connection rate limit like the real server's (every frame counts); null: none */
  rateLimit: { burst: number; perSecond: number } | null = null;
  rateLimited = 0;
  /** false: behave like a server without the README's extensions (no `conversations`, errors name no request, no `online`) */
  extensions = true;
  /** false: joining an unknown room is `not_found` (ROOMS_AUTO_CREATE off) */
  roomsAutoCreate = true;
  /** join_ack lists at most this many users (JOIN_ACK_MAX_USERS) */
  joinAckMaxUsers = 1000;
  /** extra users counted online in every room (a crowd the tests do not connect one by one) */
  crowd = 0;
  /** when set, answers a frame with this error instead of handling it (return null to handle it) */
  refuse: ((conn: Conn, frame: AnyFrame) => { code: string; message: string } | null) | null = null;
  /**
   * Stored membership (PROTOCOL.md §6): the rooms each user is a member of, listed in `welcome`,
   * changed by `join`, `leave` and `create_room`. null: a server without it (per-connection joins).
   */
  members: Map<number, Set<string>> | null = null;
  private readonly buckets = new Map<number, { tokens: number; at: number }>();

  get url(): string {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  addUser(userId: number, username: string, token = `tok-${username}`): string {
    this.tokens.set(token, { userId, username });
    return token;
  }

  async start(port = 0): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const wss = new WebSocketServer({ host: '127.0.0.1', port });
      wss.once('listening', () => resolve());
      wss.once('error', reject);
      wss.on('connection', (ws) => this.accept(ws));
      this.wss = wss;
    });
    this.port = (this.wss!.address() as AddressInfo).port;
  }

  /** Stops listening and cuts every connection without a close handshake (like a crash). */
  async kill(): Promise<void> {
    for (const c of this.conns) c.ws.terminate();
    this.conns.clear();
    await new Promise<void>((resolve) => (this.wss ? this.wss.close(() => resolve()) : resolve()));
    this.wss = null;
  }

  async restart(): Promise<void> {
    const port = this.port;
    await this.kill();
    await this.start(port);
  }

  /** Cuts every live connection (code 1006 for the clients) but keeps listening. */
  dropAll(): void {
    for (const c of [...this.conns]) c.ws.terminate();
  }

  closeAll(code: number, reason = ''): void {
    for (const c of [...this.conns]) c.ws.close(code, reason);
  }

  framesOfType(type: string): AnyFrame[] {
    return this.received.filter((r) => r.frame.type === type).map((r) => r.frame);
  }

  /** A message posted by someone else (as if from another client). */
  post(room: string, user: UserRef, content: string, clientId?: string): RoomMessage {
    const m: RoomMessage = {
      id: this.nextId++,
      fromUser: user.userId,
      username: user.username,
      content,
      timestamp: new Date().toISOString(),
      room,
      ...(clientId ? { clientId } : {}),
    };
    this.roomMsgs.push(m);
    if (!this.rooms.has(room)) this.rooms.set(room, '');
    for (const c of this.conns) if (c.rooms.has(room)) this.sendTo(c, { type: 'message', data: m });
    return m;
  }

  postDm(from: UserRef, to: number, content: string): DirectMessage {
    const m: DirectMessage = {
      id: this.nextId++,
      fromUser: from.userId,
      username: from.username,
      to,
      content,
      timestamp: new Date().toISOString(),
    };
    this.dms.push(m);
    for (const c of this.conns) if (c.user?.userId === to) this.sendTo(c, { type: 'dm', data: m });
    return m;
  }

  /**
   * An edit, delete or reaction of a DM by someone (as if from another client), told live to both
   * parties' connections and kept for catch-ups (`dm_history` with `after` carries it in `events`).
   */
  dmEvent(by: UserRef, id: number, change: { content: string } | { deleted: true } | { emoji: string; on: boolean }): AnyFrame {
    const m = this.dms.find((x) => x.id === id)!;
    const eventId = this.nextId++;
    let frame: AnyFrame;
    if ('content' in change) {
      m.content = change.content;
      m.editedAt = new Date().toISOString();
      frame = { type: 'message_edited', eventId, data: { ...m } };
    } else if ('deleted' in change) {
      m.content = '';
      m.deleted = true;
      delete m.reactions;
      frame = { type: 'message_deleted', eventId, data: { id, to: m.to, fromUser: m.fromUser } };
    } else {
      const who = (m.reactions?.[change.emoji] ?? []).filter((u) => u !== by.userId);
      m.reactions = { ...m.reactions, [change.emoji]: change.on ? [...who, by.userId] : who };
      frame = { type: 'reaction', eventId, data: { id, emoji: change.emoji, userId: by.userId, username: by.username, on: change.on } };
    }
    this.dmEvents.push({ pair: [m.fromUser, m.to], frame });
    for (const c of this.conns) if (c.user && (c.user.userId === m.to || c.user.userId === m.fromUser)) this.sendTo(c, frame);
    return frame;
  }

  /** Sends `frame` to every connection of a user (join_ack, left, invited of stored membership). */
  sendToUser(userId: number, frame: AnyFrame): void {
    for (const c of this.conns) if (c.user?.userId === userId) this.sendTo(c, frame);
  }

  /** The rooms a user is a member of (stored membership; a throwaway set without it). */
  memberOf(userId: number): Set<string> {
    if (!this.members) return new Set();
    const set = this.members.get(userId) ?? new Set<string>();
    this.members.set(userId, set);
    return set;
  }

  private lastId(room: string): number {
    return this.roomMsgs.filter((m) => m.room === room).at(-1)?.id ?? 0;
  }

  sendTo(c: Conn, frame: AnyFrame): void {
    if (c.ws.readyState === WebSocket.OPEN) c.ws.send(JSON.stringify(frame));
  }

  private accept(ws: WebSocket): void {
    const conn: Conn = { ws, id: ++this.connSeq, user: null, rooms: new Set() };
    this.connections++;
    this.conns.add(conn);
    ws.on('message', (raw) => this.onMessage(conn, raw.toString()));
    ws.on('close', (code) => {
      clearTimeout(conn.expiryTimer);
      if (!this.conns.has(conn)) return;
      this.conns.delete(conn);
      this.clientCloseCodes.push(code);
      for (const room of conn.rooms) this.leaveRoom(conn, room);
    });
  }

  /** An error answering `f`: with the extensions, it names the request (requestType, room, clientId, to, with). */
  error(c: Conn, code: string, message: string, f?: AnyFrame): void {
    const about: AnyFrame = {};
    if (this.extensions && f) {
      for (const [field, key] of [
        ['type', 'requestType'],
        ['room', 'room'],
        ['clientId', 'clientId'],
      ]) {
        if (typeof f[field] === 'string') about[key] = f[field];
      }
      // like the real server: the user ids of a refused dm (`to`) or dm_history (`with`)
      for (const field of ['to', 'with']) if (Number.isInteger(f[field])) about[field] = f[field];
    }
    this.sendTo(c, { type: 'error', message, code, ...about, data: { message, code, ...about } });
  }

  private knownUser(userId: number): UserRef | undefined {
    return [...this.tokens.values()].find((u) => u.userId === userId);
  }

  /** The caller's DM partners, the most recently active first (the `conversations` extension). */
  private conversations(me: UserRef): Array<{ userId: number; username: string; lastId: number }> {
    const last = new Map<number, number>();
    for (const m of this.dms) {
      const other = m.fromUser === me.userId ? m.to : m.to === me.userId ? m.fromUser : null;
      if (other !== null) last.set(other, Math.max(last.get(other) ?? 0, m.id));
    }
    for (const { pair, frame } of this.dmEvents) {
      const other = pair[0] === me.userId ? pair[1] : pair[1] === me.userId ? pair[0] : null;
      if (other !== null) last.set(other, Math.max(last.get(other) ?? 0, frame.eventId));
    }
    return [...last]
      .sort((a, b) => b[1] - a[1])
      .map(([userId, lastId]) => ({ userId, username: this.knownUser(userId)?.username ?? `user${userId}`, lastId }));
  }

  private online(room: string): UserRef[] {
    const m = new Map<number, UserRef>();
    for (const c of this.conns) if (c.user && c.rooms.has(room)) m.set(c.user.userId, c.user);
    return [...m.values()];
  }

  private leaveRoom(conn: Conn, room: string): void {
    conn.rooms.delete(room);
    const user = conn.user!;
    const still = [...this.conns].some((c) => c !== conn && c.user?.userId === user.userId && c.rooms.has(room));
    if (still) return;
    for (const c of this.conns) {
      if (c.rooms.has(room) && c.user?.userId !== user.userId) {
        this.sendTo(c, { type: 'presence', room, data: { event: 'leave', ...user } });
      }
    }
  }

  /** The page asked for, echoed in the answer like the real server does (an extension). */
  private pageEcho(f: AnyFrame): AnyFrame {
    if (!this.extensions) return {};
    const echo: AnyFrame = { limit: Math.min(200, typeof f.limit === 'number' ? f.limit : 50) };
    if (typeof f.before === 'number') echo.before = f.before;
    if (typeof f.after === 'number') echo.after = f.after;
    return echo;
  }

  private page<T extends { id: number }>(list: T[], f: AnyFrame): T[] {
    const limit = Math.min(200, typeof f.limit === 'number' ? f.limit : 50);
    if (typeof f.before === 'number') return list.filter((m) => m.id < f.before).slice(-limit);
    if (typeof f.after === 'number') return list.filter((m) => m.id > f.after).slice(0, limit);
    return list.slice(-limit);
  }

  private onMessage(conn: Conn, text: string): void {
    let f: AnyFrame;
    try {
      f = JSON.parse(text);
    } catch {
      this.error(conn, 'bad_json', 'bad json');
      return;
    }
    this.received.push({ conn: conn.id, user: conn.user?.userId ?? null, frame: f });
    if (this.rateLimit) {
      const now = Date.now();
      const b = this.buckets.get(conn.id) ?? { tokens: this.rateLimit.burst, at: now };
      b.tokens = Math.min(this.rateLimit.burst, b.tokens + ((now - b.at) / 1000) * this.rateLimit.perSecond);
      b.at = now;
      this.buckets.set(conn.id, b);
      if (b.tokens < 1) {
        this.rateLimited++;
        this.error(conn, 'rate_limited', 'too many frames', f);
        return;
      }
      b.tokens -= 1;
    }
    const verdict = this.onFrame?.(conn, f);
    if (verdict === 'ignore') return;
    if (verdict === 'drop-before') {
      conn.ws.terminate();
      return;
    }
    if (this.mute) return;
    const refusal = conn.user ? this.refuse?.(conn, f) : null;
    if (refusal) {
      this.error(conn, refusal.code, refusal.message, f);
      return;
    }
    if (verdict === 'lose-reply') conn.ws.terminate();
    this.dispatch(conn, f);
    if (verdict === 'drop-after') conn.ws.terminate();
  }

  /** The user of a token that is valid now (known, not expired). */
  private verify(token: unknown): UserRef | undefined {
    const expiry = this.tokenExpiry.get(token as string);
    return expiry !== undefined && expiry <= Date.now() ? undefined : this.tokens.get(token as string);
  }

  private armExpiry(conn: Conn, token: string): void {
    clearTimeout(conn.expiryTimer);
    const expiry = this.tokenExpiry.get(token);
    if (expiry === undefined) return;
    conn.expiryTimer = setTimeout(() => {
      this.error(conn, 'unauthorized', 'token has expired');
      conn.ws.close(4001, 'token expired');
    }, expiry - Date.now());
  }

  private dispatch(conn: Conn, f: AnyFrame): void {
    if (!conn.user) {
      const user = f.type === 'auth' ? this.verify(f.token) : undefined;
      if (!user) {
        conn.ws.close(4001, 'unauthorized');
        return;
      }
      conn.user = user;
      this.armExpiry(conn, f.token);
      const data: AnyFrame = { ...user, serverTime: new Date().toISOString() };
      if (this.members) data.rooms = [...(this.members.get(user.userId) ?? [])].map((room) => ({ room, private: false, lastId: this.lastId(room) }));
      this.sendTo(conn, { type: 'welcome', data });
      return;
    }
    if (f.type === 'auth') {
      const user = this.verify(f.token);
      if (user?.userId !== conn.user.userId) {
        this.error(conn, 'unauthorized', 'token refused', f);
        return;
      }
      this.armExpiry(conn, f.token);
      this.sendTo(conn, { type: 'auth_ok', data: { userId: user.userId, expiresAt: null } });
      return;
    }
    const me = conn.user;
    switch (f.type) {
      case 'join': {
        const room = f.room as string;
        if (!this.rooms.has(room)) {
          if (!this.roomsAutoCreate) {
            this.error(conn, 'not_found', `room '${room}' does not exist`, f);
            return;
          }
          this.rooms.set(room, '');
        }
        const first = ![...this.conns].some((c) => c.user?.userId === me.userId && c.rooms.has(room));
        conn.rooms.add(room);
        this.memberOf(me.userId).add(room);
        const users = this.online(room);
        const data: AnyFrame = { room, status: 'ok', users: users.slice(0, this.joinAckMaxUsers) };
        if (this.extensions) data.online = users.length + this.crowd;
        this.sendTo(conn, { type: 'join_ack', room, data });
        if (typeof f.since === 'number') {
          for (const m of this.roomMsgs) if (m.room === room && m.id > f.since) this.sendTo(conn, { type: 'message', data: m });
        }
        if (first) {
          for (const c of this.conns) {
            if (c !== conn && c.rooms.has(room) && c.user?.userId !== me.userId) {
              this.sendTo(c, { type: 'presence', room, data: { event: 'join', ...me } });
            }
          }
        }
        return;
      }
      case 'create_room': {
        if (this.rooms.has(f.room)) {
          this.error(conn, 'invalid', `room '${String(f.room)}' exists already`, f);
          return;
        }
        this.rooms.set(f.room, f.description ?? '');
        conn.rooms.add(f.room);
        this.memberOf(me.userId).add(f.room);
        this.sendTo(conn, { type: 'join_ack', room: f.room, data: { room: f.room, status: 'ok', users: [me], online: 1, members: 1 } });
        return;
      }
      case 'my_rooms': {
        const mine = [...this.memberOf(me.userId)].map((room) => ({ room, private: false, lastId: this.lastId(room) }));
        const from = typeof f.offset === 'number' ? f.offset : 0;
        this.sendTo(conn, { type: 'my_rooms', data: mine.slice(from, from + (typeof f.limit === 'number' ? f.limit : 200)) });
        return;
      }
      case 'users': {
        const q = String(f.query ?? '').toLowerCase();
        const online = new Set([...this.conns].map((c) => c.user?.userId));
        const found = [...new Map([...this.tokens.values()].map((u) => [u.userId, u])).values()]
          .filter((u) => u.username.toLowerCase().startsWith(q))
          .map((u) => ({ ...u, online: online.has(u.userId) }))
          .sort((a, b) => Number(b.online) - Number(a.online) || a.username.localeCompare(b.username));
        this.sendTo(conn, { type: 'users', data: found });
        return;
      }
      case 'leave':
        this.members?.get(me.userId)?.delete(f.room);
        this.leaveRoom(conn, f.room);
        this.sendTo(conn, { type: 'left', room: f.room });
        return;
      case 'message': {
        if (!conn.rooms.has(f.room)) {
          this.error(conn, 'not_joined', `not joined to ${f.room}`, f);
          return;
        }
        if (typeof f.content === 'string' && [...f.content].length > 4000) {
          this.error(conn, 'too_large', "field 'content' is longer than 4000 characters", f);
          return;
        }
        const key = `${me.userId}:${f.clientId}`;
        if (f.clientId && this.byClientId.has(key)) {
          this.sendTo(conn, { type: 'message', data: this.byClientId.get(key) });
          return;
        }
        const m = this.post(f.room, me, f.content, f.clientId);
        if (f.clientId) this.byClientId.set(key, m);
        return;
      }
      case 'dm': {
        const key = `${me.userId}:${f.clientId}`;
        const existing = f.clientId ? (this.byClientId.get(key) as DirectMessage | undefined) : undefined;
        if (existing) {
          this.sendTo(conn, { type: 'dm_sent', data: { to: existing.to, status: 'ok', message: existing } });
          return;
        }
        if (!this.knownUser(f.to)) {
          this.error(conn, 'not_found', `user ${String(f.to)} does not exist`, f);
          return;
        }
        const m: DirectMessage = {
          id: this.nextId++,
          fromUser: me.userId,
          username: me.username,
          to: f.to,
          content: f.content,
          timestamp: new Date().toISOString(),
          ...(f.clientId ? { clientId: f.clientId } : {}),
        };
        this.dms.push(m);
        if (f.clientId) this.byClientId.set(key, m);
        for (const c of this.conns) {
          if (c.user?.userId === f.to || (c !== conn && c.user?.userId === me.userId)) this.sendTo(c, { type: 'dm', data: m });
        }
        this.sendTo(conn, { type: 'dm_sent', data: { to: f.to, status: 'ok', message: m } });
        return;
      }
      case 'room_history':
        if (!this.rooms.has(f.room) && !this.roomsAutoCreate) {
          this.error(conn, 'not_found', `room '${String(f.room)}' does not exist`, f);
          return;
        }
        this.sendTo(conn, {
          type: 'room_history',
          room: f.room,
          ...this.pageEcho(f),
          data: this.page(this.roomMsgs.filter((m) => m.room === f.room), f),
        });
        return;
      case 'dm_history': {
        const other = f.with as number;
        const conv = this.dms.filter(
          (m) => (m.fromUser === me.userId && m.to === other) || (m.fromUser === other && m.to === me.userId),
        );
        const data = this.page(conv, f);
        const answer: AnyFrame = { type: 'dm_history', with: other, ...this.pageEcho(f), data };
        if (this.extensions && typeof f.after === 'number') {
          // like the real server: the events since `after`, up to a full page's last message, capped
          const full = data.length >= Math.min(200, typeof f.limit === 'number' ? f.limit : 50);
          const upTo = full ? data[data.length - 1].id : Number.POSITIVE_INFINITY;
          const events = this.dmEvents
            .filter(({ pair }) => (pair[0] === me.userId && pair[1] === other) || (pair[0] === other && pair[1] === me.userId))
            .map(({ frame }) => frame)
            .filter((e) => e.eventId > f.after && e.eventId <= upTo);
          answer.events = events.slice(0, this.dmCatchUpEvents);
          if (events.length > this.dmCatchUpEvents) answer.more = true;
        }
        this.sendTo(conn, answer);
        return;
      }
      case 'typing':
        for (const c of this.conns) {
          if (c !== conn && c.rooms.has(f.room) && c.user?.userId !== me.userId) {
            this.sendTo(c, { type: 'typing', room: f.room, data: me });
          }
        }
        return;
      case 'rooms':
        this.sendTo(conn, {
          type: 'rooms',
          data: [...this.rooms].map(([name, description]) => ({
            name,
            description,
            online: this.online(name).length + this.crowd,
          })),
        });
        return;
      case 'conversations':
        if (!this.extensions) break;
        this.sendTo(conn, { type: 'conversations', data: this.conversations(me) });
        return;
      case 'ping':
        this.sendTo(conn, { type: 'pong' });
        return;
    }
    this.error(conn, 'unknown_type', `unknown type ${String(f.type)}`, f);
  }
}
