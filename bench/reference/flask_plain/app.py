"""Reference server for the benchmark: plain Flask + flask-sock + gevent + psycopg2.

An idiomatic, straightforward implementation of the core subset of PROTOCOL.md:
auth by ?token= (HS256 JWT), join -> join_ack, message stored with one INSERT and then
delivered to every member of the room with a loop of ws.send, room_history.
The database access goes through a small connection pool; psycopg2 is made cooperative
with gevent by psycopg2.extras.wait_select. Run by gunicorn's gevent worker
(see gunicorn.conf.py). Env: DATABASE_URL, JWT_SECRET, PG_POOL_MAX (default 10).
"""

import json
import os
import re
from datetime import UTC

import gevent.queue
import jwt
import psycopg2
import psycopg2.extensions
import psycopg2.extras
from flask import Flask, abort, request
from flask_sock import ConnectionClosed, Sock

psycopg2.extensions.set_wait_callback(psycopg2.extras.wait_select)

DATABASE_URL = os.environ["DATABASE_URL"]
JWT_SECRET = os.environ["JWT_SECRET"]
ROOM_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Pool:
    """A fixed-size pool of psycopg2 connections handed out through a gevent queue."""

    def __init__(self, dsn, size):
        self.dsn = dsn
        self.free = gevent.queue.Queue()
        for _ in range(size):
            self.free.put(None)  # connections are opened lazily

    def run(self, sql, args=(), fetch="one"):
        conn = self.free.get()
        try:
            if conn is None or conn.closed:
                conn = psycopg2.connect(self.dsn)
            with conn.cursor() as cur:
                cur.execute(sql, args)
                rows = cur.fetchall() if fetch == "all" else (cur.fetchone() if fetch == "one" else None)
            conn.commit()
            return rows
        except Exception:
            if conn is not None:
                try:
                    conn.rollback()
                except Exception:
                    conn.close()
            raise
        finally:
            self.free.put(conn)


db = Pool(DATABASE_URL, int(os.environ.get("PG_POOL_MAX", "10")))
app = Flask(__name__)
sock = Sock(app)
rooms = {}  # room name -> set of ws


def iso(ts):
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def error(ws, code, message):
    ws.send(json.dumps({"type": "error", "message": message, "code": code, "data": {"message": message, "code": code}}))


def authenticate():
    try:
        claims = jwt.decode(request.args.get("token", ""), JWT_SECRET, algorithms=["HS256"])
        uid = claims.get("user_id", claims.get("sub"))
        uid = int(uid)
    except Exception:
        return None
    return uid, claims.get("username") or f"user{uid}"


@app.before_request
def check_token():
    if request.path in ("/", "/ws"):
        user = authenticate()
        if user is None:
            abort(401)
        request.chat_user = user


def chat(ws):
    uid, username = request.chat_user
    db.run("INSERT INTO users (id, username) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING", (uid, username), fetch=None)
    joined = set()
    try:
        while True:
            raw = ws.receive()
            try:
                msg = json.loads(raw)
            except ValueError:
                error(ws, "bad_json", "frame is not JSON")
                continue
            if not isinstance(msg, dict):
                error(ws, "bad_json", "frame is not a JSON object")
                continue
            kind = msg.get("type")
            room = msg.get("room")
            if kind == "join":
                if not isinstance(room, str) or not ROOM_RE.match(room):
                    error(ws, "invalid", "invalid room")
                    continue
                db.run("INSERT INTO rooms (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (room,), fetch=None)
                rooms.setdefault(room, set()).add(ws)
                joined.add(room)
                ws.send(json.dumps({"type": "join_ack", "room": room, "data": {"room": room, "status": "ok"}}))
            elif kind == "message":
                content = msg.get("content")
                if not isinstance(room, str):
                    error(ws, "invalid", "invalid room")
                    continue
                if not isinstance(content, str) or not content.strip() or len(content) > 4000:
                    error(ws, "invalid", "invalid content")
                    continue
                if room not in joined:
                    error(ws, "not_joined", f"not joined to {room}")
                    continue
                mid, ts = db.run(
                    "INSERT INTO messages (from_user, room, content) VALUES (%s, %s, %s) RETURNING id, timestamp",
                    (uid, room, content),
                )
                frame = json.dumps(
                    {
                        "type": "message",
                        "data": {
                            "id": mid,
                            "fromUser": uid,
                            "username": username,
                            "content": content,
                            "timestamp": iso(ts),
                            "room": room,
                        },
                    }
                )
                for member in list(rooms.get(room, ())):
                    try:
                        member.send(frame)
                    except ConnectionClosed:
                        pass
            elif kind == "room_history":
                limit = msg.get("limit", 50)
                before, after = msg.get("before"), msg.get("after")
                if not isinstance(room, str):
                    error(ws, "invalid", "invalid room")
                    continue
                if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
                    error(ws, "invalid", "invalid limit")
                    continue
                limit = min(limit, 200)
                cols = (
                    "SELECT m.id, m.from_user, u.username, m.content, m.timestamp "
                    "FROM messages m JOIN users u ON u.id = m.from_user "
                )
                if isinstance(after, int):
                    rows = db.run(
                        cols + "WHERE m.room = %s AND m.id > %s ORDER BY m.id ASC LIMIT %s",
                        (room, after, limit),
                        fetch="all",
                    )
                elif isinstance(before, int):
                    rows = db.run(
                        cols + "WHERE m.room = %s AND m.id < %s ORDER BY m.id DESC LIMIT %s",
                        (room, before, limit),
                        fetch="all",
                    )[::-1]
                else:
                    rows = db.run(cols + "WHERE m.room = %s ORDER BY m.id DESC LIMIT %s", (room, limit), fetch="all")[
                        ::-1
                    ]
                ws.send(
                    json.dumps(
                        {
                            "type": "room_history",
                            "room": room,
                            "data": [
                                {
                                    "id": r[0],
                                    "fromUser": r[1],
                                    "username": r[2],
                                    "content": r[3],
                                    "timestamp": iso(r[4]),
                                    "room": room,
                                }
                                for r in rows
                            ],
                        }
                    )
                )
            elif kind == "ping":
                ws.send('{"type":"pong"}')
            else:
                error(ws, "unknown_type", f"unknown type {kind}")
    except ConnectionClosed:
        pass
    finally:
        for room in joined:
            members = rooms.get(room)
            if members is not None:
                members.discard(ws)
                if not members:
                    rooms.pop(room, None)


sock.route("/ws")(chat)
sock.route("/", endpoint="chat_root")(chat)
