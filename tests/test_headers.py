"""Security headers of every HTTP answer, read from a real server over real HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import Client
from tests.support.databases import sql
from tests.support.identities import make_token, new_user_id, unique
from tests.support.servers import Server

# Each test starts its own server to read its HTTP answers.
pytestmark = pytest.mark.slow

COMMON = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def fetch(url: str, body: dict | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a GET, or of a POST of `body` as JSON; 4xx/5xx included."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def policy(headers: dict[str, str]) -> dict[str, str]:
    """The Content-Security-Policy header as {directive: its sources}."""
    directives = (part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
    return {name: rest for name, rest in directives}


@pytest.fixture(scope="module")
def page_server(database_url: str, tmp_path_factory) -> Iterator[Server]:
    """A server of a built page of its own, as `make web` would lay it out."""
    dist: Path = tmp_path_factory.mktemp("dist")
    (dist / "assets").mkdir()
    (dist / "index.html").write_text('<!doctype html><script type="module" src="/assets/app.js"></script>')
    (dist / "assets" / "app.js").write_text("console.log('hi')")
    srv = Server(database_url, WEB_DIST=str(dist)).start()
    yield srv
    srv.stop()


def test_the_page_may_load_only_its_own_files_and_open_its_websocket(page_server):
    status, headers, body = fetch(page_server.http + "/")
    assert status == 200 and b"/assets/app.js" in body
    assert {name: headers[name] for name in COMMON} == COMMON
    directives = policy(headers)
    assert directives["default-src"] == directives["script-src"] == directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self' ws: wss:"
    assert directives["img-src"] == "'self' data:"  # the favicon is a data: URL
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert "unsafe" not in headers["Content-Security-Policy"]


def test_assets_are_not_sniffed(page_server):
    status, headers, _ = fetch(page_server.http + "/assets/app.js")
    assert status == 200 and "javascript" in headers["Content-Type"]
    assert {name: headers[name] for name in COMMON} == COMMON


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/no-such-page"])
def test_other_answers_are_no_documents(server, path):
    status, headers, _ = fetch(server.http + path)
    assert status in (200, 404)
    assert {name: headers[name] for name in COMMON} == COMMON
    assert policy(headers) == {"default-src": "'none'", "frame-ancestors": "'none'"}


def test_a_refused_handshake_has_them_too(server):
    status, headers, _ = fetch(f"{server.http}/ws?token=not.a.jwt")
    assert status in (400, 401)
    assert {name: headers[name] for name in COMMON} == COMMON


def test_the_websocket_still_opens(server):
    user_id = new_user_id()
    client = Client.connect(server.url, make_token(user_id, "headers"))
    assert client.expect("welcome")["data"]["userId"] == user_id
    client.close()


def test_sign_in_answers_are_never_cached(server, database_url):
    from werkzeug.security import generate_password_hash

    name = unique("nocache")
    sql(database_url, "INSERT INTO users (username, password) VALUES (%s, %s)", (name, generate_password_hash("pw")))
    status, headers, body = fetch(server.http + "/api/login", {"username": name, "password": "pw"})
    assert status == 200 and json.loads(body)["token"]
    assert headers["Cache-Control"] == "no-store"
    assert {name: headers[name] for name in COMMON} == COMMON
    status, headers, _ = fetch(server.http + "/api/login", {"username": name, "password": "wrong"})
    assert status == 401 and headers["Cache-Control"] == "no-store"
