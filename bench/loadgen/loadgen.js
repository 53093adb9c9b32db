'use strict';
// Load generator for the chat benchmark. Speaks the wire protocol of shared/PROTOCOL.md.
//
//   node loadgen.js <mode> <config>        config: a JSON object or the path of a JSON file
//
// Modes
//   chat     many clients in rooms of `members`; each member sends `rate` messages/s for
//            `durationS`; latency send -> receipt at every receiver (one process, one clock);
//            loss / duplicates / out-of-order per sender per receiver; id order per receiver.
//            With `shard` ({index, procs, roomOffset, samplesFile}) it is one of several
//            processes sharing a step (bench/run.py --loadgen-procs): it runs rooms
//            roomOffset .. roomOffset + rooms - 1, prints "READY {...}" once connected, starts
//            sending at the wall-clock instant of a stdin line "start <epoch ms>", and writes
//            its measured latencies (Float64, this machine's byte order) to samplesFile.
//   idle     `n` connections authenticated and joined to one room, then held open; prints
//            "READY {...}" and obeys stdin commands "fanout" (one message to everyone, timed)
//            and "stop".
//   history  `clients` connections issuing room_history (limit 50) at `rate` requests/s each:
//            latest page, then `pages` pages backwards with `before`, then a deep `before` at
//            a random stored id; latency percentiles per kind.
//   prime    connect users and join rooms so that the server creates their rows, then quit.
//   storm    `n` users, each a member of 20 rooms, reconnect at once: welcome, `join` with
//            `since` for each room, every join_ack and replayed message awaited and checked.
//
// Progress goes to stderr; the result is one line "RESULT {json}" on stdout.

const fs = require('fs');
const crypto = require('crypto');
const readline = require('readline');
const { performance, monitorEventLoopDelay } = require('perf_hooks');
const WebSocket = require('ws');

const mode = process.argv[2];
const cfgArg = process.argv[3] || '{}';
const cfg = JSON.parse(cfgArg.trim().startsWith('{') ? cfgArg : fs.readFileSync(cfgArg, 'utf8'));

const URL_BASE = cfg.url || 'ws://127.0.0.1:9001/ws';
const SECRET = cfg.secret || 'bench-secret';
const WELCOME = !!cfg.welcome; // wait for a `welcome` frame after the open
const CONNECT_CONCURRENCY = cfg.connectConcurrency || 100;
const CONNECT_TIMEOUT_MS = cfg.connectTimeoutMs || 30000;

function log(...a) {
  process.stderr.write('[loadgen] ' + a.join(' ') + '\n');
}
function emit(tag, obj) {
  if (tag === 'RESULT') {
    const u = process.cpuUsage();
    obj.cpuTotalS = +((u.user + u.system) / 1e6).toFixed(3); // the load generator's own CPU time
  }
  process.stdout.write(tag + ' ' + JSON.stringify(obj) + '\n');
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Resolves with the epoch ms of the stdin line "start <ms>" (bench/run.py sends it once every
// process of a shared step has connected); rejects if stdin closes first.
function startFromStdin() {
  return new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: process.stdin });
    let got = false;
    rl.on('line', (line) => {
      const m = /^start ([0-9]+)$/.exec(line.trim());
      if (!m || got) return;
      got = true;
      rl.close();
      resolve(+m[1]);
    });
    rl.on('close', () => {
      if (!got) reject(new Error('stdin closed before "start"'));
    });
  });
}

// ---------------------------------------------------------------- tokens
function b64url(buf) {
  return Buffer.from(buf).toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
}
const JWT_HEADER = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
function token(uid) {
  const claims = { sub: String(uid), user_id: uid, username: 'u' + uid, exp: Math.floor(Date.now() / 1000) + 6 * 3600 };
  const body = JWT_HEADER + '.' + b64url(JSON.stringify(claims));
  return body + '.' + b64url(crypto.createHmac('sha256', SECRET).update(body).digest());
}

// ---------------------------------------------------------------- stats helpers
function percentiles(arr, n) {
  // arr: Float64Array with n valid entries (sorted in place)
  const a = arr.subarray(0, n).sort();
  const at = (p) => (n ? a[Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1))] : null);
  const r3 = (x) => (x === null ? null : Math.round(x * 1000) / 1000);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += a[i];
  return {
    count: n,
    mean: n ? r3(sum / n) : null,
    p50: r3(at(50)),
    p90: r3(at(90)),
    p95: r3(at(95)),
    p99: r3(at(99)),
    p999: r3(at(99.9)),
    max: n ? r3(a[n - 1]) : null,
  };
}
class Samples {
  constructor(cap) {
    this.a = new Float64Array(Math.max(1024, cap | 0));
    this.n = 0;
  }
  push(x) {
    if (this.n === this.a.length) {
      const b = new Float64Array(this.a.length * 2);
      b.set(this.a);
      this.a = b;
    }
    this.a[this.n++] = x;
  }
  summary() {
    return percentiles(this.a, this.n);
  }
}
function bump(obj, key, by = 1) {
  obj[key] = (obj[key] || 0) + by;
}

// A `presence` frame, told by its opening bytes (both servers write `type` first), is only
// counted: JSON.parse would cost 1.9 us of the generator's core for each (0.16 us so), and
// a crowd reconnecting gets millions (1.9 M in the storm of 5,000), which the generator,
// sharing the machine, would take from the server measured (issue #22, goal 5). A frame
// with other opening bytes is parsed, and counted, as before.
const PRESENCE_PREFIX = Buffer.from('{"type":"presence"');
function isPresence(buf) {
  return (
    Buffer.isBuffer(buf) &&
    buf.length > PRESENCE_PREFIX.length &&
    buf.compare(PRESENCE_PREFIX, 0, PRESENCE_PREFIX.length, 0, PRESENCE_PREFIX.length) === 0
  );
}

// ---------------------------------------------------------------- connection
// Opens a connection for user `uid`, waits for the open (and `welcome` if configured), joins
// each room of `rooms` in turn waiting for its join_ack. `onFrame(client, buf, now)` gets
// every frame after the last join_ack. Resolves with the client, rejects on failure.
function connect(uid, rooms, onFrame, opts = {}) {
  return new Promise((resolve, reject) => {
    const c = { uid, ws: null, joined: false, closing: false, closeCode: null, pendingJoin: 0 };
    let settled = false;
    const fail = (why) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      try {
        c.closing = true;
        c.ws.terminate();
      } catch (e) {}
      reject(new Error(why));
    };
    const timer = setTimeout(() => fail('timeout'), CONNECT_TIMEOUT_MS);
    const ws = new WebSocket(URL_BASE + '?token=' + token(uid), {
      perMessageDeflate: false,
      handshakeTimeout: CONNECT_TIMEOUT_MS,
      maxPayload: 256 * 1024 * 1024,
    });
    c.ws = ws;
    let welcomed = !WELCOME;
    let joinIdx = 0;
    const sendJoin = () => {
      ws.send(JSON.stringify({ type: 'join', room: rooms[joinIdx] }));
    };
    ws.on('open', () => {
      if (welcomed) {
        if (rooms.length) sendJoin();
        else done();
      }
    });
    const done = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      c.joined = true;
      c.joinedAt = performance.now();
      resolve(c);
    };
    ws.on('message', (buf, isBinary) => {
      const now = performance.now();
      if (c.joined) return onFrame(c, buf, now);
      // before being joined: small frames are parsed, big ones (join_ack with a long
      // `users` list) are recognised by a substring test, to keep the loadgen cheap
      let type;
      if (buf.length > 4096) {
        const head = buf.subarray(0, 64).toString();
        const m = /"type"\s*:\s*"([a-z_]+)"/.exec(head);
        type = m ? m[1] : buf.includes('"join_ack"') ? 'join_ack' : 'big';
      } else {
        let m;
        try {
          m = JSON.parse(buf);
        } catch (e) {
          return fail('bad json before join');
        }
        type = m.type;
        if (type === 'error') return fail('error before join: ' + (m.code || m.message));
      }
      if (type === 'welcome') {
        if (!welcomed) {
          welcomed = true;
          if (rooms.length) sendJoin();
          else done();
        }
      } else if (type === 'join_ack') {
        joinIdx++;
        if (joinIdx < rooms.length) sendJoin();
        else done();
      } else if (opts.onEarlyFrame) {
        opts.onEarlyFrame(c, type);
      }
    });
    ws.on('unexpected-response', (req, res) => fail('http ' + res.statusCode));
    ws.on('error', (e) => fail('ws error ' + e.message));
    ws.on('close', (code) => {
      c.closeCode = code;
      if (!settled) fail('closed ' + code);
      else if (!c.closing && opts.onClose) opts.onClose(c, code);
    });
  });
}

// Connects `specs` ([uid, rooms]) with bounded concurrency. Returns {clients, failures}.
async function connectAll(specs, onFrame, opts = {}, deadlineMs = Infinity) {
  const clients = new Array(specs.length).fill(null);
  const failures = {};
  let next = 0;
  let lastReport = performance.now();
  let doneCount = 0;
  async function worker() {
    while (next < specs.length && performance.now() < deadlineMs) {
      const i = next++;
      try {
        clients[i] = await connect(specs[i][0], specs[i][1], onFrame, opts);
      } catch (e) {
        bump(failures, e.message.replace(/[0-9]{5,}/g, 'N'));
      }
      doneCount++;
      if (performance.now() - lastReport > 5000) {
        lastReport = performance.now();
        log(`connected ${doneCount}/${specs.length}`);
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(CONNECT_CONCURRENCY, specs.length) }, worker));
  return { clients, failures };
}

function closeAll(clients) {
  for (const c of clients) {
    if (!c) continue;
    c.closing = true;
    try {
      c.ws.close(1000);
    } catch (e) {}
  }
}
async function waitClosed(clients, ms) {
  const end = performance.now() + ms;
  while (performance.now() < end && clients.some((c) => c && c.ws.readyState !== WebSocket.CLOSED)) await sleep(50);
  for (const c of clients) if (c && c.ws.readyState !== WebSocket.CLOSED) c.ws.terminate();
}

// ================================================================ chat
// The mixed workload's frames per message sent, by kind: a reader marks read every fourth
// message, reacts to one in ten, edits one in twenty, and now and then pages history, searches
// or deletes. Targets are the client's own messages, so no race with another client's delete
// can turn a frame into an error (every error fails the step).
const MIX_PER_MESSAGE = { read: 0.25, react: 0.1, edit: 0.05, history: 0.02, search: 0.01, delete: 0.01 };
const MIX_KEEP_OWN = 20; // own message ids remembered per client

function remember(list, id) {
  list.push(id);
  if (list.length > MIX_KEEP_OWN) list.shift();
}

// `ping`, named in mixOnly, sends the mix's count of frames as pings instead: what a frame
// in and a frame out cost at the least, whatever the frame asks.
function mixRates(only) {
  if (!only || only.length === 0) return MIX_PER_MESSAGE;
  const unknown = only.filter((kind) => !(kind in MIX_PER_MESSAGE) && kind !== 'ping');
  if (unknown.length) throw new Error(`mixOnly: unknown kinds ${unknown.join(', ')}`);
  const rates = Object.fromEntries(Object.entries(MIX_PER_MESSAGE).map(([kind, rate]) => [kind, only.includes(kind) ? rate : 0]));
  rates.ping = only.includes('ping') ? Object.values(MIX_PER_MESSAGE).reduce((a, b) => a + b, 0) : 0;
  return rates;
}

function mixTick(c, counts, rates) {
  const send = (kind, frame) => {
    c.ws.send(JSON.stringify(frame));
    bump(counts, kind);
  };
  const r = Math.random();
  let edge = 0;
  const pick = () => c.own[Math.floor(Math.random() * c.own.length)];
  if (r < (edge += rates.read)) {
    if (c.lastId > 0) send('read', { type: 'read', room: c.roomName, id: c.lastId });
  } else if (r < (edge += rates.react)) {
    const id = pick();
    if (id === undefined) return;
    const on = !c.reacted.has(id);
    if (on) c.reacted.add(id);
    else c.reacted.delete(id);
    send(on ? 'react' : 'unreact', { type: on ? 'react' : 'unreact', id, emoji: '👍' });
  } else if (r < (edge += rates.edit)) {
    const id = pick();
    if (id !== undefined) send('edit', { type: 'edit', id, content: `edited ${id} lorem ipsum` });
  } else if (r < (edge += rates.history)) {
    send('history', { type: 'room_history', room: c.roomName, limit: 50 });
  } else if (r < (edge += rates.search)) {
    send('search', { type: 'search', query: 'ipsum', room: c.roomName, limit: 20 });
  } else if (r < (edge += rates.delete)) {
    if (c.own.length < 2) return;
    const id = c.own.shift(); // the oldest: never edited or reacted to again
    c.reacted.delete(id);
    send('delete', { type: 'delete', id });
  } else if (r < (edge += rates.ping || 0)) {
    send('ping', { type: 'ping' });
  }
}

async function runChat() {
  const ROOMS = cfg.rooms || 10;
  const MEMBERS = cfg.members || 10;
  const RATE = cfg.rate || 2; // messages per second per member
  const DURATION = (cfg.durationS || 20) * 1000;
  const WARMUP = (cfg.warmupS === undefined ? 3 : cfg.warmupS) * 1000;
  const DRAIN = (cfg.drainS || 3) * 1000; // give up after this long without any delivery
  const TAG = String(cfg.tag || 'x' + Date.now().toString(36));
  const PAD = cfg.contentPad === undefined ? 'lorem ipsum dolor sit amet consectetur' : cfg.contentPad;
  const USER_BASE = cfg.userBase || 100000;
  const ROOM_PREFIX = cfg.roomPrefix || 'bench';
  // like the React client: every message carries a clientId (the server's resend key)
  const CLIENT_IDS = Boolean(cfg.clientIds);
  // the v2 mixed workload (issue #21): besides its messages, each client marks its room read,
  // reacts, edits, deletes, asks for history and searches, at the rates of MIX (per message sent)
  // (with mixOnly, only the kinds it names, each at its usual rate)
  const MIX = cfg.mix ? mixRates(cfg.mixOnly) : null;
  const MAXSEQ = Math.ceil((RATE * DURATION) / 1000) + 8;
  const INTERVAL = 1000 / RATE;
  // one of several processes sharing the step: its rooms are the step's rooms ROOM_OFFSET ..
  // ROOM_OFFSET + ROOMS - 1, with the users, names and content one process would give them
  const SHARD = cfg.shard || null;
  const ROOM_OFFSET = SHARD ? SHARD.roomOffset : 0;

  const st = {
    sent: 0,
    sentMeasured: 0,
    recvUnique: 0,
    recvTotal: 0,
    dup: 0,
    outOfOrder: 0,
    idInversions: 0,
    wrongRoom: 0,
    foreign: 0,
    badFrames: 0,
    deliveredMeasured: 0,
    errors: {},
    otherFrames: {},
    unexpectedCloses: {},
    mixSent: {},
  };
  const lat = new Samples(ROOMS * MEMBERS * MEMBERS * RATE * ((DURATION - WARMUP) / 1000) * 1.05);
  let measureStart = Infinity;
  let measureEnd = Infinity;
  let sendStart = Infinity;
  // per second of send time: the slowest delivery, and how many took longer than the
  // p99 limit, to tell one pause from a load the server cannot keep up with
  const seconds = Math.ceil(DURATION / 1000);
  const worstBySecond = new Float64Array(seconds);
  const slowBySecond = new Int32Array(seconds);
  const P99_LIMIT = cfg.p99LimitMs || 100;

  const roomName = (r) => ROOM_PREFIX + (ROOM_OFFSET + r);
  const sentPerRoom = new Int32Array(ROOMS);

  function onFrame(c, buf, now) {
    if (isPresence(buf)) return bump(st.otherFrames, 'presence');
    let m;
    try {
      m = JSON.parse(buf);
    } catch (e) {
      st.badFrames++;
      return;
    }
    if (m.type === 'message') {
      const d = m.data;
      const content = d && d.content;
      st.recvTotal++;
      if (typeof content !== 'string' || !content.startsWith('b1 ')) {
        st.foreign++;
        return;
      }
      const p = content.split(' ', 6);
      if (p[1] !== TAG) {
        st.foreign++;
        return;
      }
      const sRoom = +p[2];
      const sIdx = +p[3];
      const seq = +p[4];
      const t = +p[5];
      if (sRoom !== c.stepRoom || d.room !== c.roomName) {
        st.wrongRoom++;
        return;
      }
      if (d.id <= c.lastId) st.idInversions++;
      else c.lastId = d.id;
      if (MIX && sIdx === c.idx) remember(c.own, d.id);
      const k = sIdx * MAXSEQ + seq;
      if (c.seen[k]) {
        st.dup++;
        return;
      }
      c.seen[k] = 1;
      st.recvUnique++;
      if (seq < c.maxSeq[sIdx]) st.outOfOrder++;
      else c.maxSeq[sIdx] = seq;
      const ms = now - t;
      if (t >= measureStart && t < measureEnd) {
        lat.push(ms);
        st.deliveredMeasured++;
      }
      const second = Math.floor((t - sendStart) / 1000);
      if (second >= 0 && second < seconds) {
        if (ms > worstBySecond[second]) worstBySecond[second] = ms;
        if (ms > P99_LIMIT) slowBySecond[second]++;
      }
    } else if (m.type === 'error') {
      bump(st.errors, m.code || 'unknown');
    } else {
      bump(st.otherFrames, m.type);
    }
  }
  const onClose = (c, code) => bump(st.unexpectedCloses, code);

  // connect: room r of the step has users USER_BASE + r*MEMBERS + i
  const specs = [];
  for (let r = 0; r < ROOMS; r++) {
    for (let i = 0; i < MEMBERS; i++) specs.push([USER_BASE + (ROOM_OFFSET + r) * MEMBERS + i, [roomName(r)]]);
  }
  const t0 = performance.now();
  const { clients, failures } = await connectAll(specs, onFrame, { onClose });
  const connectS = (performance.now() - t0) / 1000;
  const connected = clients.filter(Boolean).length;
  log(`chat: ${connected}/${specs.length} connected+joined in ${connectS.toFixed(2)}s`);
  clients.forEach((c, n) => {
    if (!c) return;
    c.room = Math.floor(n / MEMBERS); // in this process
    c.stepRoom = ROOM_OFFSET + c.room; // in the step (content, clientId)
    c.idx = n % MEMBERS;
    c.roomName = roomName(c.room);
    c.seen = new Uint8Array(MEMBERS * MAXSEQ);
    c.maxSeq = new Int32Array(MEMBERS).fill(-1);
    c.lastId = -1;
    c.seq = 0;
    c.own = []; // ids of this client's own messages, newest last (the mix edits, deletes, reacts to these)
    c.reacted = new Set();
  });
  const membersInRoom = new Int32Array(ROOMS);
  for (const c of clients) if (c) membersInRoom[c.room]++;

  const result = {
    mode: 'chat',
    rooms: ROOMS,
    members: MEMBERS,
    ratePerMember: RATE,
    targetMsgsPerS: ROOMS * MEMBERS * RATE,
    durationS: DURATION / 1000,
    warmupS: WARMUP / 1000,
    clients: specs.length,
    connected,
    connectFailures: failures,
    connectS: +connectS.toFixed(3),
  };
  if (connected === 0) {
    emit('RESULT', Object.assign(result, { ok: false, reason: 'no client connected' }));
    return;
  }

  await sleep(500);
  // a shared step: every process starts sending at the one wall-clock instant run.py gives
  let startAt = null;
  if (SHARD) {
    emit('READY', { index: SHARD.index, connected });
    startAt = await startFromStdin();
  }
  // send phase
  const eld = monitorEventLoopDelay({ resolution: 5 });
  eld.enable();
  const cpu0 = process.cpuUsage();
  sendStart = performance.now() + (startAt === null ? 50 : startAt - Date.now());
  const sendStartEpochMs = startAt === null ? Date.now() + 50 : startAt;
  const sendEnd = sendStart + DURATION;
  measureStart = sendStart + WARMUP;
  measureEnd = sendEnd;
  // tell the driver when the measured window opens and closes (it samples the server's
  // and PostgreSQL's CPU time then, leaving out the connects and the warm-up)
  setTimeout(() => emit('MARK', { at: 'measure-start' }), Math.max(0, measureStart - performance.now()));
  setTimeout(() => emit('MARK', { at: 'measure-end' }), Math.max(0, measureEnd - performance.now()));
  // and when sending begins and everything sent has arrived: CPU per message over all of it
  // holds also when the server falls behind (its backlog is worked off after measure-end)
  setTimeout(() => emit('MARK', { at: 'send-start' }), Math.max(0, sendStart - performance.now()));
  let lateSends = 0;
  for (const c of clients) {
    if (!c) continue;
    const phase = Math.random() * INTERVAL;
    let due = sendStart + phase;
    const tick = () => {
      const now = performance.now();
      if (now >= sendEnd || c.ws.readyState !== WebSocket.OPEN || c.seq >= MAXSEQ) return;
      if (now - due > 50) lateSends++;
      const seq = c.seq++;
      const frame = {
        type: 'message',
        room: c.roomName,
        content: `b1 ${TAG} ${c.stepRoom} ${c.idx} ${seq} ${now.toFixed(3)} ${PAD}`,
      };
      if (CLIENT_IDS) frame.clientId = `${TAG}-${c.stepRoom}-${c.idx}-${seq}`;
      c.ws.send(JSON.stringify(frame));
      if (MIX) mixTick(c, st.mixSent, MIX);
      st.sent++;
      sentPerRoom[c.room]++;
      if (now >= measureStart) st.sentMeasured++;
      due += INTERVAL;
      setTimeout(tick, Math.max(0, due - performance.now()));
    };
    setTimeout(tick, Math.max(0, due - performance.now()));
  }
  let lastLog = performance.now();
  while (performance.now() < sendEnd) {
    await sleep(200);
    if (performance.now() - lastLog >= 5000) {
      lastLog = performance.now();
      log(`chat: t=${((lastLog - sendStart) / 1000).toFixed(0)}s sent=${st.sent} recv=${st.recvUnique}`);
    }
  }
  const cpuSend = process.cpuUsage(cpu0);
  const sendWall = (performance.now() - sendStart) / 1000;
  // drain
  let expected = 0;
  for (let r = 0; r < ROOMS; r++) expected += sentPerRoom[r] * membersInRoom[r];
  // drain: until everything arrived, or nothing arrived for DRAIN ms (then the rest is lost),
  // at most 60 s; late deliveries are not losses, they show in the latency
  const drainCap = performance.now() + 60000;
  let lastCount = st.recvUnique;
  let lastProgress = performance.now();
  while (performance.now() < drainCap && st.recvUnique < expected) {
    await sleep(20);
    if (st.recvUnique !== lastCount) {
      lastCount = st.recvUnique;
      lastProgress = performance.now();
    } else if (performance.now() - lastProgress > DRAIN) break;
  }
  const drainS = (performance.now() - sendEnd) / 1000;
  emit('MARK', { at: 'drained' });
  eld.disable();
  closeAll(clients);
  await waitClosed(clients, 3000);

  // loss per receiver: expected = what its room sent; compare with unique receipts
  const lost = expected - st.recvUnique;
  const measuredS = (measureEnd - measureStart) / 1000;
  const latency = lat.summary();
  if (SHARD) {
    // what run.py needs to merge the processes: the raw counts and every measured latency
    fs.writeFileSync(SHARD.samplesFile, Buffer.from(lat.a.buffer, lat.a.byteOffset, lat.n * 8));
    result.shard = {
      index: SHARD.index,
      roomOffset: ROOM_OFFSET,
      sentMeasured: st.sentMeasured,
      deliveredMeasured: st.deliveredMeasured,
      measuredS,
      latencySamples: lat.n,
    };
  }
  const failuresCount = Object.values(failures).reduce((a, b) => a + b, 0);
  const errorsCount = Object.values(st.errors).reduce((a, b) => a + b, 0);
  const closesCount = Object.values(st.unexpectedCloses).reduce((a, b) => a + b, 0);
  Object.assign(result, {
    sent: st.sent,
    sentMsgsPerS: +(st.sentMeasured / measuredS).toFixed(1),
    expectedDeliveries: expected,
    deliveredUnique: st.recvUnique,
    lost,
    duplicates: st.dup,
    outOfOrder: st.outOfOrder,
    idInversions: st.idInversions,
    wrongRoom: st.wrongRoom,
    foreign: st.foreign,
    badFrames: st.badFrames,
    errors: st.errors,
    otherFrames: st.otherFrames,
    unexpectedCloses: st.unexpectedCloses,
    mixSent: MIX ? st.mixSent : undefined,
    // stored-and-delivered rate: messages sent in the measured window, all of them delivered
    // to every member if lost == 0
    storedMsgsPerS: +(st.sentMeasured / measuredS).toFixed(1),
    deliveriesPerS: +(st.deliveredMeasured / measuredS).toFixed(1),
    latencyMs: latency,
    // second k covers messages sent from sendStartEpochMs + k s (warm-up included)
    sendStartEpochMs,
    worstMsBySecond: Array.from(worstBySecond, (v) => Math.round(v)),
    slowBySecond: Array.from(slowBySecond),
    drainS: +drainS.toFixed(3),
    loadgen: {
      cpuPct: +((100 * (cpuSend.user + cpuSend.system)) / 1e6 / sendWall).toFixed(1),
      eventLoopDelayP99Ms: +(eld.percentile(99) / 1e6).toFixed(2),
      eventLoopDelayMaxMs: +(eld.max / 1e6).toFixed(2),
      lateSends,
    },
  });
  const reasons = [];
  if (failuresCount) reasons.push(`${failuresCount} connect failures`);
  if (lost > 0) reasons.push(`lost ${lost}`);
  if (st.dup) reasons.push(`dup ${st.dup}`);
  if (st.outOfOrder) reasons.push(`out-of-order ${st.outOfOrder}`);
  if (st.wrongRoom) reasons.push(`wrong room ${st.wrongRoom}`);
  if (errorsCount) reasons.push(`errors ${JSON.stringify(st.errors)}`);
  if (closesCount) reasons.push(`closes ${JSON.stringify(st.unexpectedCloses)}`);
  if (latency.p99 === null || latency.p99 > P99_LIMIT) reasons.push(`p99 ${latency.p99} ms`);
  result.ok = reasons.length === 0;
  result.reason = reasons.join('; ');
  if (result.loadgen.cpuPct > 85) result.warning = 'load generator near its CPU limit: latencies may include its own queueing';
  emit('RESULT', result);
}

// ================================================================ idle
async function runIdle() {
  const N = cfg.n || 10000;
  const ROOM = cfg.room || 'lobby';
  const USER_BASE = cfg.userBase || 500000;
  const CONNECT_LIMIT_S = cfg.connectLimitS || 300;
  const HOLD_MAX_S = cfg.holdMaxS || 300;
  const MARK = 'fanout-' + Date.now().toString(36);
  const st = { framesAfterJoin: 0, bytesAfterJoin: 0, earlyFrames: {}, unexpectedCloses: {} };
  let fan = null; // {t0, times: Samples, got}

  function onFrame(c, buf, now) {
    st.framesAfterJoin++;
    st.bytesAfterJoin += buf.length;
    if (fan && buf.length < 4096 && buf.includes(MARK)) {
      if (!c.gotFan) {
        c.gotFan = true;
        fan.got++;
        fan.times.push(now - fan.t0);
      }
    }
  }
  const opts = {
    onEarlyFrame: (c, type) => bump(st.earlyFrames, type),
    onClose: (c, code) => bump(st.unexpectedCloses, code),
  };
  const specs = [];
  for (let i = 0; i < N; i++) specs.push([USER_BASE + i, [ROOM]]);
  const t0 = performance.now();
  const { clients, failures } = await connectAll(specs, onFrame, opts, t0 + CONNECT_LIMIT_S * 1000);
  const connectS = (performance.now() - t0) / 1000;
  const live = clients.filter(Boolean);
  const result = {
    mode: 'idle',
    n: N,
    connected: live.length,
    connectFailures: failures,
    notAttempted: specs.length - live.length - Object.values(failures).reduce((a, b) => a + b, 0),
    connectS: +connectS.toFixed(2),
  };
  log(`idle: ${live.length}/${N} connected+joined in ${connectS.toFixed(1)}s`);
  // let the join-time traffic (presence etc.) settle: wait until no frame for 1 s (max 60 s)
  let last = st.framesAfterJoin;
  const settleEnd = performance.now() + 60000;
  for (;;) {
    await sleep(1000);
    if (st.framesAfterJoin === last || performance.now() > settleEnd) break;
    last = st.framesAfterJoin;
  }
  result.settleS = +((performance.now() - t0) / 1000 - connectS).toFixed(2);
  result.framesDuringJoin = Object.assign({ afterOwnJoin: st.framesAfterJoin }, st.earlyFrames);
  emit('READY', result);

  async function fanout() {
    if (!live.length) return { error: 'nobody connected' };
    const sender = live[0];
    for (const c of live) c.gotFan = false;
    fan = { t0: performance.now(), times: new Samples(live.length), got: 0 };
    sender.ws.send(JSON.stringify({ type: 'message', room: ROOM, content: 'b1 ' + MARK + ' one message to the whole room' }));
    const end = performance.now() + (cfg.fanoutTimeoutS || 30) * 1000;
    while (performance.now() < end && fan.got < live.length) await sleep(5);
    const s = fan.times.summary();
    const r = { receivers: live.length, received: fan.got, msToP50: s.p50, msToP99: s.p99, msToAll: fan.got === live.length ? s.max : null };
    fan = null;
    return r;
  }

  let stopped = false;
  const stop = async (why) => {
    if (stopped) return;
    stopped = true;
    result.stopReason = why;
    result.unexpectedCloses = st.unexpectedCloses;
    result.stillOpen = live.filter((c) => c.ws.readyState === WebSocket.OPEN).length;
    closeAll(live);
    await waitClosed(live, 10000);
    emit('RESULT', result);
    process.exit(0);
  };
  setTimeout(() => stop('holdMaxS'), HOLD_MAX_S * 1000);
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', async (line) => {
    const cmd = line.trim();
    if (cmd === 'fanout') {
      result.fanout = await fanout();
      emit('FANOUT', result.fanout);
    } else if (cmd === 'stop') stop('stop');
  });
  rl.on('close', () => stop('stdin closed'));
}

// ================================================================ history
async function runHistory() {
  const C = cfg.clients || 20;
  const RATE = cfg.rate || 5; // requests per second per client
  const DURATION = (cfg.durationS || 20) * 1000;
  const WARMUP = (cfg.warmupS === undefined ? 2 : cfg.warmupS) * 1000;
  const LIMIT = cfg.limit || 50;
  const PAGES = cfg.pages === undefined ? 3 : cfg.pages;
  const USER_BASE = cfg.userBase || 900000;
  const deep = cfg.deepFile ? JSON.parse(fs.readFileSync(cfg.deepFile, 'utf8')) : cfg.deep || {}; // room -> [ids]
  const rooms = cfg.roomNames || Object.keys(deep);
  if (!rooms.length) throw new Error('history: no rooms');
  const JOIN = cfg.join !== false;

  const lat = { latest: new Samples(1e5), page: new Samples(1e5), deep: new Samples(1e5) };
  const st = { requests: 0, responses: 0, invalid: 0, invalidSamples: [], errors: {}, otherFrames: {}, unexpectedCloses: {}, backlogMax: 0 };
  let measureStart = Infinity;
  let measureEnd = Infinity;
  let sendStart = Infinity;
  // per second of send time: the slowest delivery, and how many took longer than the
  // p99 limit, to tell one pause from a load the server cannot keep up with
  const seconds = Math.ceil(DURATION / 1000);
  const worstBySecond = new Float64Array(seconds);
  const slowBySecond = new Int32Array(seconds);
  const P99_LIMIT = cfg.p99LimitMs || 100;

  // client k queries (and joins) rooms k, k+C, k+2C, ... (one room when there are more clients than rooms)
  const myRooms = (k) => (C >= rooms.length ? [rooms[k % rooms.length]] : rooms.filter((_, i) => i % C === k));
  function invalid(why) {
    st.invalid++;
    if (st.invalidSamples.length < 5) st.invalidSamples.push(why);
  }
  function onFrame(c, buf, now) {
    if (isPresence(buf)) return bump(st.otherFrames, 'presence');
    let m;
    try {
      m = JSON.parse(buf);
    } catch (e) {
      invalid('bad json');
      return;
    }
    if (m.type === 'room_history') {
      const req = c.inflight;
      if (!req) return invalid('unexpected room_history');
      c.inflight = null;
      st.responses++;
      const d = m.data;
      if (!Array.isArray(d)) invalid('data not an array');
      else if (m.room !== req.room) invalid(`room ${m.room} != ${req.room}`);
      else if (d.length !== LIMIT) invalid(`${req.kind}: ${d.length} rows, wanted ${LIMIT}`);
      else {
        for (let i = 1; i < d.length; i++) if (!(d[i].id > d[i - 1].id)) return invalid('ids not ascending');
        if (req.before !== undefined && d[d.length - 1].id >= req.before) invalid('id >= before');
        c.oldest = d[0].id;
      }
      if (req.due >= measureStart && req.due < measureEnd) lat[req.kind].push(now - req.due);
      pump(c);
    } else if (m.type === 'error') {
      bump(st.errors, m.code || 'unknown');
      if (c.inflight) {
        c.inflight = null;
        pump(c);
      }
    } else bump(st.otherFrames, m.type);
  }
  // each client cycles: latest, PAGES x before=<oldest of previous page>, deep before=<random stored id>
  function nextRequest(c) {
    const step = c.step++ % (PAGES + 2);
    if (step === 0 || (step <= PAGES && !c.oldest)) {
      c.room = c.rooms[Math.floor(Math.random() * c.rooms.length)];
      c.oldest = null;
      return { kind: 'latest', room: c.room };
    }
    if (step <= PAGES) return { kind: 'page', room: c.room, before: c.oldest };
    const r = c.rooms[Math.floor(Math.random() * c.rooms.length)];
    const ids = deep[r];
    if (!ids || !ids.length) return { kind: 'latest', room: r };
    return { kind: 'deep', room: r, before: ids[Math.floor(Math.random() * ids.length)] };
  }
  function pump(c) {
    if (c.inflight || !c.queue.length) return;
    const due = c.queue.shift();
    const req = nextRequest(c);
    req.due = due;
    c.inflight = req;
    const frame = { type: 'room_history', room: req.room, limit: LIMIT };
    if (req.before !== undefined) frame.before = req.before;
    c.ws.send(JSON.stringify(frame));
    st.requests++;
  }

  const specs = [];
  for (let k = 0; k < C; k++) specs.push([USER_BASE + k, JOIN ? myRooms(k) : []]);
  const t0 = performance.now();
  const { clients, failures } = await connectAll(specs, onFrame, { onClose: (c, code) => bump(st.unexpectedCloses, code) });
  const live = clients.filter(Boolean);
  log(`history: ${live.length}/${C} connected in ${((performance.now() - t0) / 1000).toFixed(2)}s`);
  live.forEach((c, k) => Object.assign(c, { rooms: myRooms(k), queue: [], inflight: null, step: 0, oldest: null }));
  await sleep(1100); // let the rate-limit bucket of the joins refill a little
  const start = performance.now() + 20;
  const end = start + DURATION;
  measureStart = start + WARMUP;
  measureEnd = end;
  const INTERVAL = 1000 / RATE;
  for (const c of live) {
    let due = start + Math.random() * INTERVAL;
    const tick = () => {
      if (due >= end || c.ws.readyState !== WebSocket.OPEN) return;
      c.queue.push(due);
      if (c.queue.length > st.backlogMax) st.backlogMax = c.queue.length;
      pump(c);
      due += INTERVAL;
      setTimeout(tick, Math.max(0, due - performance.now()));
    };
    setTimeout(tick, Math.max(0, due - performance.now()));
  }
  while (performance.now() < end) await sleep(100);
  const drainEnd = performance.now() + 5000;
  while (performance.now() < drainEnd && live.some((c) => c.inflight || c.queue.length)) await sleep(20);
  closeAll(live);
  await waitClosed(live, 3000);
  const all = new Samples(1);
  for (const k of Object.keys(lat)) for (let i = 0; i < lat[k].n; i++) all.push(lat[k].a[i]);
  const measuredS = (measureEnd - measureStart) / 1000;
  emit('RESULT', {
    mode: 'history',
    clients: C,
    connected: live.length,
    connectFailures: failures,
    targetReqPerS: C * RATE,
    achievedReqPerS: +(all.n / measuredS).toFixed(1),
    limit: LIMIT,
    requests: st.requests,
    responses: st.responses,
    unanswered: live.reduce((a, c) => a + (c.inflight ? 1 : 0) + c.queue.length, 0),
    invalid: st.invalid,
    invalidSamples: st.invalidSamples,
    errors: st.errors,
    otherFrames: st.otherFrames,
    unexpectedCloses: st.unexpectedCloses,
    backlogMax: st.backlogMax,
    latencyMs: { all: all.summary(), latest: lat.latest.summary(), page: lat.page.summary(), deep: lat.deep.summary() },
  });
}

// ================================================================ bigroom
// One room of `n` members, one of them sending `rate` messages/s for `durationS`: the
// delivery latency at every member (issue #22, goal 4). The other members only listen.
async function runBigRoom() {
  const N = cfg.n || 5000;
  const ROOM = cfg.room || 'big';
  const USER_BASE = cfg.userBase || 700000;
  const RATE = cfg.rate || 1;
  const DURATION = (cfg.durationS || 30) * 1000;
  const WARMUP = (cfg.warmupS === undefined ? 2 : cfg.warmupS) * 1000;
  const TAG = 'big' + Date.now().toString(36);
  const COUNT = Math.floor((DURATION / 1000) * RATE);
  const lat = new Samples(N * COUNT);
  const perMessage = []; // seq -> {got, last}
  const sentAt = [];
  const st = { received: 0, dup: 0, errors: {}, unexpectedCloses: {} };
  let measureFrom = Infinity;

  let frames = 0;
  function onFrame(c, buf, now) {
    frames++;
    // presence of later joins reaches the early members: skip anything but our messages cheaply
    if (buf.length > 2048 || !buf.includes(TAG)) return;
    let m;
    try {
      m = JSON.parse(buf);
    } catch (e) {
      return;
    }
    if (m.type === 'error') return bump(st.errors, m.code || 'unknown');
    if (m.type !== 'message' || !m.data || typeof m.data.content !== 'string') return;
    const p = m.data.content.split(' ', 4);
    const seq = +p[2];
    const t = +p[3];
    if (c.seen[seq]) {
      st.dup++;
      return;
    }
    c.seen[seq] = 1;
    st.received++;
    const pm = perMessage[seq];
    pm.got++;
    pm.last = Math.max(pm.last, now - t);
    if (t >= measureFrom) lat.push(now - t);
  }
  const specs = [];
  for (let i = 0; i < N; i++) specs.push([USER_BASE + i, [ROOM]]);
  const t0 = performance.now();
  const { clients, failures } = await connectAll(specs, onFrame, {
    onClose: (c, code) => bump(st.unexpectedCloses, code),
  });
  const connectS = (performance.now() - t0) / 1000;
  const live = clients.filter(Boolean);
  for (const c of live) c.seen = new Uint8Array(COUNT + 1);
  log(`bigroom: ${live.length}/${N} connected+joined in ${connectS.toFixed(1)}s`);
  // let the joins' presence traffic settle before sending: until 1 s passes without a frame (max 120 s)
  const settleEnd = performance.now() + 120000;
  for (let seen = -1; frames !== seen && performance.now() < settleEnd; ) {
    seen = frames;
    await sleep(1000);
  }
  const settleS = (performance.now() - t0) / 1000 - connectS;
  const sender = live[0];
  const start = performance.now() + 20;
  measureFrom = start + WARMUP;
  const cpu0 = process.cpuUsage();
  for (let seq = 0; seq < COUNT; seq++) {
    const due = start + (seq * 1000) / RATE;
    await sleep(Math.max(0, due - performance.now()));
    perMessage[seq] = { got: 0, last: 0 };
    const now = performance.now();
    sentAt[seq] = now;
    sender.ws.send(JSON.stringify({ type: 'message', room: ROOM, content: `b1 ${TAG} ${seq} ${now.toFixed(3)} hello all` }));
  }
  // drain: everything delivered, or 5 s with nothing new
  let last = st.received;
  let lastProgress = performance.now();
  while (st.received < COUNT * live.length && performance.now() - lastProgress < 5000) {
    await sleep(50);
    if (st.received !== last) {
      last = st.received;
      lastProgress = performance.now();
    }
  }
  const cpu = process.cpuUsage(cpu0);
  closeAll(live);
  await waitClosed(live, 5000);
  const toAll = new Samples(COUNT);
  for (const pm of perMessage) if (pm && pm.got === live.length) toAll.push(pm.last);
  const latency = lat.summary();
  emit('RESULT', {
    mode: 'bigroom',
    n: N,
    connected: live.length,
    connectFailures: failures,
    connectS: +connectS.toFixed(2),
    settleS: +settleS.toFixed(2),
    messages: COUNT,
    expected: COUNT * live.length,
    received: st.received,
    lost: COUNT * live.length - st.received,
    duplicates: st.dup,
    errors: st.errors,
    unexpectedCloses: st.unexpectedCloses,
    latencyMs: latency,
    msToAll: toAll.summary(),
    loadgenCpuS: +((cpu.user + cpu.system) / 1e6).toFixed(2),
    ok: live.length === N && st.received === COUNT * live.length && !st.dup,
  });
}

// ================================================================ prime
async function runPrime() {
  const users = cfg.users || [];
  const rooms = cfg.roomNames || [];
  const per = cfg.roomsPerUser || 10;
  const specs = users.map((u, i) => {
    const rs = [];
    for (let j = i * per; j < (i + 1) * per && j < rooms.length; j++) rs.push(rooms[j]);
    return [u, rs];
  });
  // users beyond the room list still connect once so that their rows exist
  const { clients, failures } = await connectAll(specs, () => {});
  const ok = clients.filter(Boolean);
  closeAll(ok);
  await waitClosed(ok, 3000);
  emit('RESULT', { mode: 'prime', users: users.length, connected: ok.length, connectFailures: failures });
}

// ================================================================ storm
// `n` users, each a member of `perUser` rooms (storm_rooms below), reconnect at once (at most
// `concurrency` of them between their handshake and their last join_ack at a time), each:
// open with ?token=, await `welcome` (project), send `join` for each of its rooms at once
// (with `since` from the resume file when given), await every join_ack and every replayed
// message. The resume file ({room: [since, [ids above since]]}) says what each replay must
// hold: lost, duplicated or out-of-order ids are counted per client and room.
function stormRooms(i, n, perUser, roomSize, prefix) {
  // room k of user i: the users are cut into runs of `roomSize` consecutive ones, the cut
  // shifted by 7*k for the k-th room so that the rooms of one user have different members;
  // bench/harness/scenarios/storm.py seeds chat_members with the same formula
  const perK = n / roomSize;
  const rooms = [];
  for (let k = 0; k < perUser; k++) rooms.push(prefix + (k * perK + Math.floor(((i + 7 * k) % n) / roomSize)));
  return rooms;
}

async function runStorm() {
  const N = cfg.n || 5000;
  const PER_USER = cfg.perUser || 20;
  const ROOM_SIZE = cfg.roomSize || 20;
  const PREFIX = cfg.roomPrefix || 'st';
  const USER_BASE = cfg.userBase || 700000;
  const CONC = cfg.concurrency || 500;
  const LIMIT_S = cfg.limitS || 600;
  const resume = cfg.resumeFile ? JSON.parse(fs.readFileSync(cfg.resumeFile, 'utf8')) : null;
  // after the last resume: presence settled once quiet this long, or given up after this
  const PRESENCE_QUIET_MS = 1000;
  const PRESENCE_SETTLE_MAX_S = cfg.presenceSettleMaxS || 120;
  const st = {
    lastPresenceAt: 0,
    replayed: 0,
    expectedReplay: 0,
    lost: 0,
    dup: 0,
    outOfOrder: 0,
    unexpectedIds: 0,
    welcomeWithoutRooms: 0,
    errors: {},
    failures: {},
    otherFrames: {},
    unexpectedCloses: {},
  };
  const perClientMs = new Samples(N);

  // one client: resolves when its welcome, all join_acks and all replayed messages are in
  function one(i) {
    return new Promise((resolve) => {
      const uid = USER_BASE + i;
      const rooms = stormRooms(i, N, PER_USER, ROOM_SIZE, PREFIX);
      const c = { ws: null, acks: 0, want: 0, got: 0, seen: {}, next: {}, done: false };
      const t0 = performance.now();
      let timer = null;
      const finish = (why) => {
        if (c.done) return;
        c.done = true;
        clearTimeout(timer);
        if (why) bump(st.failures, why);
        else perClientMs.push(performance.now() - t0);
        resolve(c);
      };
      timer = setTimeout(() => finish('timeout'), CONNECT_TIMEOUT_MS * 4);
      const ws = new WebSocket(URL_BASE + '?token=' + token(uid), { perMessageDeflate: false, handshakeTimeout: CONNECT_TIMEOUT_MS });
      c.ws = ws;
      const check = () => {
        if (!c.done && c.acks === rooms.length && c.got >= c.want) finish(null);
      };
      const joinAll = () => {
        for (const room of rooms) {
          const frame = { type: 'join', room };
          if (resume) {
            const r = resume[room];
            frame.since = r ? r[0] : 0;
            const ids = r ? r[1] : [];
            c.want += ids.length;
            c.next[room] = 0; // index in ids of the next replayed message
          }
          ws.send(JSON.stringify(frame));
        }
        st.expectedReplay += c.want;
      };
      ws.on('open', () => {
        if (!WELCOME) joinAll();
      });
      ws.on('message', (buf) => {
        if (isPresence(buf)) {
          st.lastPresenceAt = performance.now();
          return bump(st.otherFrames, 'presence');
        }
        let m;
        try {
          m = JSON.parse(buf);
        } catch (e) {
          return bump(st.errors, 'bad json');
        }
        if (m.type === 'welcome') {
          // a server that could not read the user's rooms greets with none (project)
          if (resume && m.data && Array.isArray(m.data.rooms) && m.data.rooms.length === 0) st.welcomeWithoutRooms++;
          joinAll();
        }
        else if (m.type === 'join_ack') {
          c.acks++;
          check();
        } else if (m.type === 'message' && resume && m.data && m.data.room) {
          const room = m.data.room;
          const ids = resume[room] ? resume[room][1] : [];
          const id = m.data.id;
          const key = room + '/' + id;
          if (c.seen[key]) {
            st.dup++;
            return;
          }
          c.seen[key] = 1;
          const at = ids.indexOf(id);
          if (at < 0) {
            st.unexpectedIds++;
            return;
          }
          if (at < c.next[room]) st.outOfOrder++;
          else c.next[room] = at + 1;
          c.got++;
          st.replayed++;
          check();
        } else if (m.type === 'error') {
          bump(st.errors, m.code || 'unknown');
        } else bump(st.otherFrames, m.type);
      });
      ws.on('unexpected-response', (req, res) => finish('http ' + res.statusCode));
      ws.on('error', (e) => finish('ws error ' + e.message));
      ws.on('close', (code) => {
        if (!c.done) finish('closed ' + code);
        else if (!c.closing) bump(st.unexpectedCloses, code);
      });
    });
  }

  const clients = new Array(N).fill(null);
  let next = 0;
  let doneCount = 0;
  const t0 = performance.now();
  const deadline = t0 + LIMIT_S * 1000;
  let lastLog = t0;
  emit('MARK', { at: 'measure-start' });
  async function worker() {
    while (next < N && performance.now() < deadline) {
      const i = next++;
      clients[i] = await one(i);
      doneCount++;
      if (performance.now() - lastLog > 5000) {
        lastLog = performance.now();
        log(`storm: ${doneCount}/${N} resumed`);
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(CONC, N) }, worker));
  const wallS = (performance.now() - t0) / 1000;
  emit('MARK', { at: 'measure-end' });
  // late duplicates or extra replays would show within this second
  await sleep(1000);
  // A server may still be announcing the crowd's presence (rows written behind the
  // connects): wait until no presence frame came for PRESENCE_QUIET_MS, and say when the
  // last one came, so that work moved past the resume is seen (not counted in wallS).
  const presenceAtResumed = st.otherFrames.presence || 0;
  const settleDeadline = performance.now() + PRESENCE_SETTLE_MAX_S * 1000;
  while (st.lastPresenceAt && performance.now() - st.lastPresenceAt < PRESENCE_QUIET_MS && performance.now() < settleDeadline) {
    await sleep(200);
  }
  const presenceSettledS = st.lastPresenceAt ? (st.lastPresenceAt - t0) / 1000 : null;
  if (cfg.idleS) {
    // the crowd at rest: what the server spends keeping it (heartbeats, pings)
    emit('MARK', { at: 'idle-start' });
    await sleep(cfg.idleS * 1000);
    emit('MARK', { at: 'idle-end' });
  }
  const live = clients.filter((c) => c && c.ws);
  let missing = 0;
  for (const c of live) if (c.got < c.want) missing += c.want - c.got;
  for (const c of live) c.closing = true;
  closeAll(live);
  await waitClosed(live, 10000);
  const failures = Object.values(st.failures).reduce((a, b) => a + b, 0);
  const errors = Object.values(st.errors).reduce((a, b) => a + b, 0);
  const reasons = [];
  if (failures) reasons.push(`${failures} clients failed ${JSON.stringify(st.failures)}`);
  if (missing) reasons.push(`lost ${missing}`);
  if (st.dup) reasons.push(`dup ${st.dup}`);
  if (st.outOfOrder) reasons.push(`out-of-order ${st.outOfOrder}`);
  if (st.unexpectedIds) reasons.push(`unexpected ids ${st.unexpectedIds}`);
  if (errors) reasons.push(`errors ${JSON.stringify(st.errors)}`);
  emit('RESULT', {
    mode: 'storm',
    n: N,
    perUser: PER_USER,
    roomSize: ROOM_SIZE,
    concurrency: CONC,
    resumed: perClientMs.n,
    wallS: +wallS.toFixed(3),
    perClientMs: perClientMs.summary(),
    expectedReplay: st.expectedReplay,
    replayed: st.replayed,
    lost: missing,
    duplicates: st.dup,
    outOfOrder: st.outOfOrder,
    unexpectedIds: st.unexpectedIds,
    welcomeWithoutRooms: st.welcomeWithoutRooms,
    errors: st.errors,
    failures: st.failures,
    otherFrames: st.otherFrames,
    presenceSettledS: presenceSettledS === null ? null : +presenceSettledS.toFixed(3),
    presenceAfterResumed: (st.otherFrames.presence || 0) - presenceAtResumed,
    ok: reasons.length === 0,
    reason: reasons.join('; '),
  });
}

const modes = { chat: runChat, idle: runIdle, history: runHistory, prime: runPrime, storm: runStorm, bigroom: runBigRoom };
if (!modes[mode]) {
  log('usage: node loadgen.js chat|idle|history|prime|storm|bigroom <json config or file>');
  process.exit(2);
}
modes[mode]().then(
  () => {
    if (mode !== 'idle') process.exit(0);
  },
  (e) => {
    log('fatal: ' + (e.stack || e));
    emit('RESULT', { mode, fatal: String(e.message || e) });
    process.exit(1);
  }
);
