/**
 * What the client tests against the fake server share: two users, clients with short timers
 * (made through one list, so that each test stops its own), and a wait for a condition.
 */
import { vi } from 'vitest';
import { WebSocket } from 'ws';
import { ChatClient, type ChatClientOptions, type WebSocketCtor } from '../src';
import { FakeChatServer } from './fakeServer';

export const ALICE = { userId: 1, username: 'alice' };
export const BOB = { userId: 2, username: 'bob' };

/** A fake server that knows alice and bob, listening. */
export async function startServer(): Promise<FakeChatServer> {
  const server = new FakeChatServer();
  server.addUser(ALICE.userId, ALICE.username);
  server.addUser(BOB.userId, BOB.username);
  await server.start();
  return server;
}

/** Takes `server` down until `c` notices, runs `meanwhile`, and starts it again on its port. */
export async function whileServerDown(server: FakeChatServer, c: ChatClient, meanwhile: () => void) {
  await server.kill();
  await until(() => c.getState().status === 'reconnecting');
  meanwhile();
  await server.start(server.port);
}

/** Timers short enough for a test, and no pings or going-away delay to wait out. */
const TEST_OPTIONS: Partial<ChatClientOptions> = {
  backoff: { baseMs: 20, capMs: 200, jitter: 0 },
  stableAfterMs: 300,
  tickMs: 20,
  welcomeTimeoutMs: 2000,
  pingIntervalMs: 0,
  goingAwayMinMs: 0,
  goingAwayMaxMs: 0,
};

/** The clients a test file makes, all against the server `url()` names at the time. */
export class TestClients {
  private made: ChatClient[] = [];

  constructor(private readonly url: () => string) {}

  make(opts: Partial<ChatClientOptions> = {}, token = 'tok-alice'): ChatClient {
    const c = new ChatClient({
      url: this.url(),
      WebSocket: WebSocket as unknown as WebSocketCtor,
      getToken: async () => token,
      ...TEST_OPTIONS,
      ...opts,
    });
    this.made.push(c);
    return c;
  }

  /** Stops every client made since the last call (in afterEach). */
  stopAll(): void {
    for (const c of this.made.splice(0)) c.stop();
  }
}

/** Resolves once `fn()` is truthy, polling every 10 ms; fails after `timeout` ms. */
export const until = (fn: () => unknown, timeout = 5000) =>
  vi.waitFor(
    () => {
      if (!fn()) throw new Error('condition not met yet');
    },
    { timeout, interval: 10 },
  );
