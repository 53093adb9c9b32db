/**
 * A small in-process implementation of the server side of PROTOCOL.md, on the `ws` package,
 * for the client's tests. It keeps its "database" across restart() so that tests can drop
 * connections or restart the server mid-conversation, and it records every frame it receives.
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
  readonly roomMsgs: RoomMessage[] = [];
  readonly dms: DirectMessage[] = [];
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

  sendTo(c: Conn, frame: AnyFrame): void {
    if (c.ws.readyState === WebSocket.OPEN) c.ws.send(JSON.stringify(frame));
  }

  private accept(ws: WebSocket): void {
    const conn: Conn = { ws, id: ++this.connSeq, user: null, rooms: new Set() };
    this.connections++;
    this.conns.add(conn);
    ws.on('message', (raw) => this.onMessage(conn, raw.toString()));
    ws.on('close', (code) => {
      if (!this.conns.has(conn)) return;
      this.conns.delete(conn);
      this.clientCloseCodes.push(code);
      for (const room of conn.rooms) this.leaveRoom(conn, room);
    });
  }

  private error(c: Conn, code: string, message: string): void {
    this.sendTo(c, { type: 'error', message, code, data: { message, code } });
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
        this.error(conn, 'rate_limited', 'too many frames');
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
    if (verdict === 'lose-reply') conn.ws.terminate();
    this.dispatch(conn, f);
    if (verdict === 'drop-after') conn.ws.terminate();
  }

  private dispatch(conn: Conn, f: AnyFrame): void {
    if (!conn.user) {
      const user = f.type === 'auth' ? this.tokens.get(f.token) : undefined;
      if (!user) {
        conn.ws.close(4001, 'unauthorized');
        return;
      }
      conn.user = user;
      this.sendTo(conn, { type: 'welcome', data: { ...user, serverTime: new Date().toISOString() } });
      return;
    }
    const me = conn.user;
    switch (f.type) {
      case 'join': {
        const room = f.room as string;
        if (!this.rooms.has(room)) this.rooms.set(room, '');
        const first = ![...this.conns].some((c) => c.user?.userId === me.userId && c.rooms.has(room));
        conn.rooms.add(room);
        this.sendTo(conn, { type: 'join_ack', room, data: { room, status: 'ok', users: this.online(room) } });
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
      case 'leave':
        this.leaveRoom(conn, f.room);
        this.sendTo(conn, { type: 'left', room: f.room });
        return;
      case 'message': {
        if (!conn.rooms.has(f.room)) {
          this.error(conn, 'not_joined', `not joined to ${f.room}`);
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
        this.sendTo(conn, {
          type: 'room_history',
          room: f.room,
          data: this.page(this.roomMsgs.filter((m) => m.room === f.room), f),
        });
        return;
      case 'dm_history': {
        const other = f.with as number;
        const conv = this.dms.filter(
          (m) => (m.fromUser === me.userId && m.to === other) || (m.fromUser === other && m.to === me.userId),
        );
        this.sendTo(conn, { type: 'dm_history', with: other, data: this.page(conv, f) });
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
          data: [...this.rooms].map(([name, description]) => ({ name, description, online: this.online(name).length })),
        });
        return;
      case 'ping':
        this.sendTo(conn, { type: 'pong' });
        return;
      default:
        this.error(conn, 'unknown_type', `unknown type ${String(f.type)}`);
    }
  }
}
