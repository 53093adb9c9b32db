"""Plain HTTP routes: health, metrics, the web client, and standalone sign-in."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, send_from_directory
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import db

bp = Blueprint("http", __name__)

PLACEHOLDER_PAGE = """<!doctype html><meta charset="utf-8"><title>Chat server</title>
<p>The chat server is running. The WebSocket is at <code>/ws</code> (and <code>/</code>).
<p>The web client is not built: run <code>make web</code>, or <code>make run</code>, which builds it.
"""


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
