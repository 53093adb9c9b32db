"""Plain HTTP routes: health, metrics, the web client, and standalone sign-in."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, request, send_from_directory
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import db

bp = Blueprint("http", __name__)

# The built page (web/app) loads its script and stylesheet from /assets/, its favicon is a
# data: URL, and it opens the WebSocket on its own host. React's `style` props set styles
# through the CSSOM, which style-src does not govern: no 'unsafe-inline' anywhere.
# ws:/wss: are listed besides 'self', which covers them only in browsers since 2022
# (Safari 16); any host, but a script would have to run first, and only ours can.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# Everything else (JSON, metrics, scripts, refusals, error pages) is no document that loads anything.
OTHER_POLICY = "default-src 'none'; frame-ancestors 'none'"
SECURITY_HEADERS = {
    # A browser must not guess a script or a page out of a text or JSON answer.
    "X-Content-Type-Options": "nosniff",
    # frame-ancestors' older twin, for browsers without CSP level 2: no clickjacking.
    "X-Frame-Options": "DENY",
    # Links in messages lead elsewhere: they are not told which chat they came from.
    "Referrer-Policy": "no-referrer",
}

PLACEHOLDER_PAGE = """<!doctype html><meta charset="utf-8"><title>Chat server</title>
<p>The chat server is running. The WebSocket is at <code>/ws</code> (and <code>/</code>).
<p>The web client is not built: run <code>make web</code>, or <code>make run</code>, which builds it.
"""


@bp.after_app_request
def security_headers(response: Response) -> Response:
    """Add the security headers to every HTTP answer of the app.

    A WebSocket's 101 is written by flask-sock before any hook and is not touched.
    """
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    policy = PAGE_POLICY if request.endpoint == "http.index" else OTHER_POLICY
    response.headers.setdefault("Content-Security-Policy", policy)
    return response


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """200 when the database answers, 503 while it is unreachable."""
    if db.ping(current_app.config["DATABASE_URL"], timeout=2):
        return jsonify(status="ok", database="ok"), 200
    return jsonify(status="unavailable", database="unreachable"), 503


@bp.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)


@bp.get("/")
def index() -> Response:
    dist = Path(current_app.config["WEB_DIST"])
    if (dist / "index.html").is_file():
        return send_from_directory(dist, "index.html", max_age=0)
    return Response(PLACEHOLDER_PAGE, mimetype="text/html")


@bp.get("/assets/<path:name>")
def assets(name: str) -> Response:
    return send_from_directory(Path(current_app.config["WEB_DIST"]) / "assets", name, max_age=3600)
