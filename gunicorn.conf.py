"""gunicorn settings: the gevent worker, bound to WS_BIND_ADDR.

The plain gevent worker is the one that works with flask-sock (the gevent-websocket worker
handshakes twice and corrupts frames).
"""

import os
import signal

from dotenv import load_dotenv

load_dotenv(".env", override=False)

bind = os.environ.get("WS_BIND_ADDR") or "127.0.0.1:9001"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
worker_class = "gevent"
# Every WebSocket holds one "connection" of the worker for its whole life.
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "20000"))
# WebSocket handlers live long; the worker's heartbeat to the arbiter is what counts.
timeout = 30
graceful_timeout = 10
keepalive = 5
# The control socket lives at one fixed path per user: two instances on one machine
# would fight over it, and nothing here uses it.
control_socket_disable = True
# Browsers cannot set headers on a WebSocket: the token comes in the query string, and a
# token with many claims is past gunicorn's default request line (4094 bytes, then 414).
# 8190 is the most gunicorn allows.
limit_request_line = 8190
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# Access log off by default; when on, %(U)s logs the path without the query string,
# which may hold a token.
accesslog = os.environ.get("ACCESS_LOG") or None
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(D)sus'


def post_worker_init(worker):
    """Tune the garbage collector, and on SIGTERM close every WebSocket with 1001."""
    import gc

    import gevent

    # Everything loaded so far (Flask, gevent, psycopg2, the app) lives as long as the
    # worker: freezing it keeps it out of every full collection, each a pause of the event
    # loop. Fewer, larger young collections too.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)

    from app.runtime import shutdown_runtime

    def close_then_stop():
        # WebSocket sessions run outside gunicorn's request pool (see app/websocket.py):
        # the worker must not exit before they have sent their close frames.
        shutdown_runtime(worker.wsgi, wait_seconds=graceful_timeout - 2)
        worker.alive = False

    def handle_term(signum, frame):
        gevent.spawn(close_then_stop)

    signal.signal(signal.SIGTERM, handle_term)


def worker_int(worker):
    from app.runtime import shutdown_runtime

    shutdown_runtime(worker.wsgi, wait_seconds=2)
