'use strict';
// Reference server for the benchmark: an idiomatic Node `ws` + `pg` implementation of the
// core subset of PROTOCOL.md (auth by ?token=, join -> join_ack, message stored with one
// INSERT then delivered to every member of the room with a loop, room_history).
// It is what a competent Node developer would write in an afternoon, nothing more:
// no batching, no prepared-statement tricks beyond pg's defaults, one pg.Pool.
//
// Env: DATABASE_URL, JWT_SECRET, WS_BIND_ADDR (host:port), PG_POOL_MAX (default 10).

const http = require('http');
const crypto = require('crypto');
const { WebSocketServer } = require('ws');
const { Pool } = require('pg');

const [HOST, PORT] = (() => {
  const a = process.env.WS_BIND_ADDR || '127.0.0.1:9001';
  const i = a.lastIndexOf(':');
  return [a.slice(0, i), Number(a.slice(i + 1))];
})();
const SECRET = process.env.JWT_SECRET || '';
const pool = new Pool({
  connectionString: process.env.DATABASE_URL,
  max: Number(process.env.PG_POOL_MAX || 10),
});

// --- HS256 JWT verification (only HS256 is accepted) ---
function b64urlDecode(s) {
  return Buffer.from(s.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
}
function verifyJwt(token) {
  const parts = String(token || '').split('.');
  if (parts.length !== 3) return null;
  let header, claims;
  try {
    header = JSON.parse(b64urlDecode(parts[0]).toString('utf8'));
    claims = JSON.parse(b64urlDecode(parts[1]).toString('utf8'));
  } catch (e) {
    return null;
  }
  if (!header || header.alg !== 'HS256') return null;
  const expected = crypto.createHmac('sha256', SECRET).update(parts[0] + '.' + parts[1]).digest();
  const given = b64urlDecode(parts[2]);
  if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) return null;
  const now = Date.now() / 1000;
  if (typeof claims.exp === 'number' && now >= claims.exp) return null;
  if (typeof claims.nbf === 'number' && now < claims.nbf) return null;
  let id = claims.user_id !== undefined ? claims.user_id : claims.sub;
  if (typeof id === 'string' && /^[0-9]+$/.test(id)) id = Number(id);
  if (!Number.isInteger(id)) return null;
  return { id, username: typeof claims.username === 'string' ? claims.username : 'user' + id };
}

function iso(ts) {
  // RFC 3339 UTC with microseconds (pg gives millisecond Date objects)
  return ts.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

function sendError(ws, code, message) {
  ws.send(JSON.stringify({ type: 'error', message, code, data: { message, code } }));
}

const rooms = new Map(); // room name -> Set of ws

const server = http.createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
const wss = new WebSocketServer({ noServer: true });

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname !== '/' && url.pathname !== '/ws') {
    socket.end('HTTP/1.1 404 Not Found\r\n\r\n');
    return;
  }
  const user = verifyJwt(url.searchParams.get('token'));
  if (!user) {
    socket.end('HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  // make sure the user row exists before accepting, so no frame can arrive before the
  // connection's handlers are attached
  pool
    .query('INSERT INTO users (id, username) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING', [user.id, user.username])
    .then(() => {
      wss.handleUpgrade(req, socket, head, (ws) => {
        ws.user = user;
        ws.rooms = new Set();
        wss.emit('connection', ws, req);
      });
    })
    .catch((err) => {
      console.error('user upsert failed', err.message);
      socket.end('HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n');
    });
});

wss.on('connection', (ws) => {
  ws.on('message', (raw, isBinary) => {
    let msg;
    try {
      msg = JSON.parse(raw.toString());
    } catch (e) {
      return sendError(ws, 'bad_json', 'frame is not JSON');
    }
    if (!msg || typeof msg !== 'object') return sendError(ws, 'bad_json', 'frame is not a JSON object');
    handle(ws, msg).catch((err) => {
      console.error('handler error', err.message);
      sendError(ws, 'internal', 'internal error');
    });
  });
  ws.on('close', () => {
    for (const r of ws.rooms) {
      const members = rooms.get(r);
      if (members) {
        members.delete(ws);
        if (members.size === 0) rooms.delete(r);
      }
    }
  });
  ws.on('error', () => {});
});

const ROOM_RE = /^[A-Za-z0-9_.-]{1,64}$/;

async function handle(ws, msg) {
  switch (msg.type) {
    case 'join': {
      const room = msg.room;
      if (typeof room !== 'string' || !ROOM_RE.test(room)) return sendError(ws, 'invalid', 'invalid room');
      await pool.query('INSERT INTO rooms (name) VALUES ($1) ON CONFLICT (name) DO NOTHING', [room]);
      let members = rooms.get(room);
      if (!members) rooms.set(room, (members = new Set()));
      members.add(ws);
      ws.rooms.add(room);
      ws.send(JSON.stringify({ type: 'join_ack', room, data: { room, status: 'ok' } }));
      return;
    }
    case 'message': {
      const { room, content } = msg;
      if (typeof room !== 'string') return sendError(ws, 'invalid', 'invalid room');
      if (typeof content !== 'string' || !content.trim() || content.length > 4000)
        return sendError(ws, 'invalid', 'invalid content');
      if (!ws.rooms.has(room)) return sendError(ws, 'not_joined', 'not joined to ' + room);
      const r = await pool.query(
        'INSERT INTO messages (from_user, room, content) VALUES ($1, $2, $3) RETURNING id, timestamp',
        [ws.user.id, room, content]
      );
      const row = r.rows[0];
      const frame = JSON.stringify({
        type: 'message',
        data: {
          id: Number(row.id),
          fromUser: ws.user.id,
          username: ws.user.username,
          content,
          timestamp: iso(row.timestamp),
          room,
        },
      });
      const members = rooms.get(room);
      if (members) for (const m of members) if (m.readyState === 1) m.send(frame);
      return;
    }
    case 'room_history': {
      const { room, before, after } = msg;
      let limit = msg.limit === undefined ? 50 : msg.limit;
      if (typeof room !== 'string') return sendError(ws, 'invalid', 'invalid room');
      if (!Number.isInteger(limit) || limit <= 0) return sendError(ws, 'invalid', 'invalid limit');
      limit = Math.min(limit, 200);
      let r;
      const cols = 'SELECT m.id, m.from_user, u.username, m.content, m.timestamp FROM messages m JOIN users u ON u.id = m.from_user';
      if (Number.isInteger(after)) {
        r = await pool.query(`${cols} WHERE m.room = $1 AND m.id > $2 ORDER BY m.id ASC LIMIT $3`, [room, after, limit]);
      } else if (Number.isInteger(before)) {
        r = await pool.query(`${cols} WHERE m.room = $1 AND m.id < $2 ORDER BY m.id DESC LIMIT $3`, [room, before, limit]);
        r.rows.reverse();
      } else {
        r = await pool.query(`${cols} WHERE m.room = $1 ORDER BY m.id DESC LIMIT $2`, [room, limit]);
        r.rows.reverse();
      }
      const data = r.rows.map((row) => ({
        id: Number(row.id),
        fromUser: row.from_user,
        username: row.username,
        content: row.content,
        timestamp: iso(row.timestamp),
        room,
      }));
      ws.send(JSON.stringify({ type: 'room_history', room, data }));
      return;
    }
    case 'ping':
      ws.send('{"type":"pong"}');
      return;
    default:
      return sendError(ws, 'unknown_type', 'unknown type ' + String(msg.type));
  }
}

server.listen(PORT, HOST, () => console.error(`node reference listening on ${HOST}:${PORT}`));

function shutdown() {
  for (const ws of wss.clients) ws.close(1001);
  server.close();
  pool.end().finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
