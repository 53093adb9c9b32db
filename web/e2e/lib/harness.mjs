// Test harness for the browser tests: a throwaway PostgreSQL database, the real chat server
// (gunicorn) started and killed by process group, users, and a protocol-level seeding client.
import { spawn, execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { WebSocket } from 'ws';

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));

export const REPO_ROOT = process.env.CHAT_REPO_ROOT ?? path.resolve(here, '../../..');
export const WEB_DIST = process.env.WEB_DIST ?? path.join(REPO_ROOT, 'web', 'app', 'dist');
export const ARTIFACTS = path.resolve(here, '..', 'artifacts');
const PG_HOST = process.env.PGHOST_E2E ?? '127.0.0.1';
const PG_PORT = process.env.PGPORT_E2E ?? '5432';
const PG_USER = process.env.PGUSER_E2E ?? 'postgres';

mkdirSync(ARTIFACTS, { recursive: true });
// Screenshots of an earlier run would be mistaken for this one's.
for (const f of readdirSync(ARTIFACTS)) if (f.endsWith('.png')) rmSync(path.join(ARTIFACTS, f));

/** Polls `fn` until it returns a truthy value (or throws after `timeoutMs`). */
export async function until(what, fn, { timeoutMs = 20_000, intervalMs = 100 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${lastError.message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export class Database {
  constructor() {
    this.name = `chat_e2e_${randomBytes(5).toString('hex')}`;
    this.url = `postgresql://${PG_USER}@${PG_HOST}:${PG_PORT}/${this.name}`;
  }

  async create() {
    await run('createdb', ['-h', PG_HOST, '-p', PG_PORT, '-U', PG_USER, this.name]);
    await run('psql', ['-q', '-v', 'ON_ERROR_STOP=1', this.url, '-f', path.join(REPO_ROOT, 'schema.sql')]);
  }

  async query(sql) {
    const { stdout } = await run('psql', ['-q', '-At', '-F', '\t', '-v', 'ON_ERROR_STOP=1', this.url, '-c', sql]);
    return stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split('\t'));
  }

  /** Simulates a database outage for this database only: refuse and cut its connections. */
  async block() {
    await this.admin(`ALTER DATABASE ${this.name} ALLOW_CONNECTIONS false`);
    await this.admin(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${this.name}'`);
  }

  async unblock() {
    await this.admin(`ALTER DATABASE ${this.name} ALLOW_CONNECTIONS true`);
  }

  async admin(sql) {
    await run('psql', ['-q', '-h', PG_HOST, '-p', PG_PORT, '-U', PG_USER, '-d', 'postgres', '-v', 'ON_ERROR_STOP=1', '-c', sql]);
  }

  async drop() {
    await this.unblock().catch(() => {});
    await run('dropdb', ['-h', PG_HOST, '-p', PG_PORT, '-U', PG_USER, '--if-exists', '--force', this.name]);
  }
}

export class ChatServer {
  constructor({ db, port }) {
    this.db = db;
    this.port = port;
    this.jwtSecret = randomBytes(32).toString('hex');
    this.proc = null;
    this.starts = 0;
    this.log = createWriteStream(path.join(ARTIFACTS, 'server.log'), { flags: 'w' });
  }

  get base() {
    return `http://127.0.0.1:${this.port}`;
  }

  env() {
    return {
      ...process.env,
      DATABASE_URL: this.db.url,
      JWT_SECRET: this.jwtSecret,
      WEB_DIST,
      LOG_LEVEL: 'info',
    };
  }

  async createUser(name, password) {
    const bin = path.join(REPO_ROOT, '.venv', 'bin', 'flask');
    await run(bin, ['--app', 'wsgi', 'create-user', name, '--password', password], { cwd: REPO_ROOT, env: this.env() });
  }

  async start() {
    const bin = path.join(REPO_ROOT, '.venv', 'bin', 'gunicorn');
    if (!existsSync(bin)) throw new Error(`${bin} not found: run the server's install first`);
    this.starts++;
    this.log.write(`\n===== start #${this.starts} on port ${this.port} =====\n`);
    const proc = spawn(bin, ['-c', 'gunicorn.conf.py', '-b', `127.0.0.1:${this.port}`, 'wsgi:app'], {
      cwd: REPO_ROOT,
      env: this.env(),
      detached: true, // own process group: master and workers are killed together
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    proc.stdout.pipe(this.log, { end: false });
    proc.stderr.pipe(this.log, { end: false });
    this.proc = proc;
    this.exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
    let died = null;
    this.exited.then((x) => (died = x));
    await until(
      `the server on port ${this.port} to answer /healthz`,
      async () => {
        if (died) throw new Error(`gunicorn exited early (${JSON.stringify(died)}), see artifacts/server.log`);
        const res = await fetch(`${this.base}/healthz`);
        return res.ok;
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    );
  }

  /**
   * Stops the whole process group. 'SIGKILL' is a crash (no close frames, clients see 1006);
   * 'SIGTERM' is a graceful stop (the server closes WebSockets with 1001).
   */
  async kill(signal = 'SIGKILL') {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    try {
      process.kill(-proc.pid, signal);
    } catch (e) {
      if (e.code !== 'ESRCH') throw e;
    }
    const timer = setTimeout(() => {
      try {
        process.kill(-proc.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, 15_000);
    await this.exited;
    clearTimeout(timer);
    // Workers of a killed master may linger a moment: wait until the group is gone.
    await until('the server process group to exit', () => {
      try {
        process.kill(-proc.pid, 0);
        return false;
      } catch {
        return true;
      }
    });
    this.proc = null;
  }

  async login(username, password) {
    const res = await fetch(`${this.base}/api/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username, password }),
    });
    if (!res.ok) throw new Error(`login ${username}: HTTP ${res.status}`);
    return res.json();
  }

  /**
   * Posts `count` messages to `room` as `user` through the WebSocket protocol, one at a time,
   * waiting for each echo and honouring `rate_limited` (same clientId on retry).
   */
  async seedRoom(user, password, room, count, prefix) {
    const { token } = await this.login(user, password);
    const ws = new WebSocket(`ws://127.0.0.1:${this.port}/ws`);
    const inbox = [];
    let wake = () => {};
    ws.on('message', (raw) => {
      inbox.push(JSON.parse(raw.toString()));
      wake();
    });
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const next = async (pred, what) => {
      const deadline = Date.now() + 10_000;
      for (;;) {
        const i = inbox.findIndex(pred);
        if (i >= 0) return inbox.splice(i, 1)[0];
        if (Date.now() > deadline) throw new Error(`seed: no ${what}`);
        await new Promise((r) => {
          wake = r;
          setTimeout(r, 200);
        });
      }
    };
    ws.send(JSON.stringify({ type: 'auth', token }));
    await next((f) => f.type === 'welcome', 'welcome');
    ws.send(JSON.stringify({ type: 'join', room }));
    await next((f) => f.type === 'join_ack', 'join_ack');
    for (let i = 1; i <= count; i++) {
      const clientId = randomUUID();
      for (;;) {
        ws.send(JSON.stringify({ type: 'message', room, content: `${prefix} ${i}`, clientId }));
        const f = await next(
          (x) => (x.type === 'message' && x.data.clientId === clientId) || x.type === 'error',
          `echo of ${prefix} ${i}`,
        );
        if (f.type === 'message') break;
        if (f.code !== 'rate_limited') throw new Error(`seed: ${f.code} ${f.message}`);
        await new Promise((r) => setTimeout(r, 150));
      }
    }
    ws.close(1000);
  }
}

// Debian's Chromium (playwright cannot download its own browsers here), without the
// background networking that this machine's closed network refuses.
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-quic',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
];

/** Launches the browser every test file drives. */
export function launchChromium(chromium) {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
}
