"""HTTP routes through Flask's test client: health, metrics, the page, sign-in."""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

import gevent
import psycopg2.extensions
import pytest
from werkzeug.security import generate_password_hash

from app import create_app, db, login, runtime
from app.tokens import verify_token
from tests.support.databases import sql
from tests.support.identities import SECRET


@pytest.fixture
def pool(database_url):
    pool = db.Pool(database_url, size=4)
    yield pool
    pool.close()


def app_with_pool(pool: db.Pool, monkeypatch, **config):
    """The app, whose sign-in takes its connections from `pool`.

    A pool alone stands in for the runtime: the real one's greenlets (bus, heartbeat, lag
    probe) would outlive the test.
    """
    app = create_app({"TESTING": True, "JWT_SECRET": SECRET, "DATABASE_URL": pool.dsn, **config})
    monkeypatch.setattr(runtime.chat(app), "_runtime", SimpleNamespace(pool=pool))
    return app


@pytest.fixture
def app(pool, monkeypatch):
    return app_with_pool(pool, monkeypatch)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def test_building_the_app_starts_nothing(database_url, monkeypatch):
    """The factory is free of side effects: no runtime (pool, greenlets), no process-wide
    setting (psycopg2's wait callback, logging); the runtime is an extension of the app."""
    monkeypatch.setattr(logging.root, "handlers", [])
    psycopg2.extensions.set_wait_callback(None)
    app = create_app({"TESTING": True, "DATABASE_URL": database_url, "JWT_SECRET": SECRET})
    assert psycopg2.extensions.get_wait_callback() is None
    assert logging.root.handlers == []
    extension = app.extensions["chat"]
    assert isinstance(extension, runtime.Chat) and not extension.shutting_down
    assert extension._runtime is None


def test_healthz_is_ok_with_the_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "database": "ok"}


def test_healthz_is_503_without_the_database():
    app = create_app({"TESTING": True, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "JWT_SECRET": SECRET})
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json["database"] == "unreachable"


def test_metrics_are_prometheus_text(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    for name in (
        "chat_connections",
        "chat_frames_in_total",
        "chat_messages_stored_total",
        "chat_db_transaction_seconds",
    ):
        assert name in body


def test_index_serves_a_page(client):
    response = client.get("/")
    assert response.status_code == 200
    assert b"<" in response.data


@pytest.fixture
def alice(runner, database_url):
    name = "login-alice"
    sql(database_url, "DELETE FROM users WHERE username = %s", (name,))
    result = runner.invoke(args=["create-user", name, "--password", "correct horse"])
    assert result.exit_code == 0, result.output
    login.by_address.states.clear()
    login.by_account.states.clear()
    return name


def test_login_returns_a_token_for_the_right_password(client, alice):
    response = client.post("/api/login", json={"username": alice, "password": "correct horse"})
    assert response.status_code == 200
    identity = verify_token(response.json["token"], SECRET)
    assert identity.username == alice and identity.user_id == response.json["userId"]


@pytest.mark.parametrize("username,password", [("login-alice", "wrong"), ("nobody-at-all", "correct horse")])
def test_login_refuses_wrong_credentials_without_saying_which(client, alice, username, password):
    response = client.post("/api/login", json={"username": username, "password": password})
    assert response.status_code == 401
    assert response.json == {"error": "invalid credentials"}


def test_a_login_that_waits_too_long_for_a_password_check_is_told_to_retry(client, alice, monkeypatch):
    monkeypatch.setattr(login, "HASH_WAIT_SECONDS", 0.05)
    for _ in range(login.HASHES_AT_ONCE):  # a flood holds every check
        login._hash_slots.acquire()
    try:
        busy = client.post("/api/login", json={"username": alice, "password": "correct horse"})
    finally:
        for _ in range(login.HASHES_AT_ONCE):
            login._hash_slots.release()
    assert busy.status_code == 503 and "retry" in busy.json["error"]
    again = client.post("/api/login", json={"username": alice, "password": "correct horse"})
    assert again.status_code == 200


@pytest.mark.parametrize("body", [None, {}, {"username": "x"}, {"username": 1, "password": 2}])
def test_login_needs_username_and_password(client, body):
    assert client.post("/api/login", json=body).status_code == 400


@pytest.mark.slow
def test_repeated_failures_are_slowed_down(client, alice, monkeypatch):
    delays = []
    monkeypatch.setattr(login.gevent, "sleep", delays.append)
    # The clock stands still: on a busy machine each password check can outlast the
    # delay it earned, and the next attempt would then owe nothing.
    reserve = login.reserve_together
    monkeypatch.setattr(login, "reserve_together", lambda claims: reserve(claims, now=1000.0))
    for _ in range(6):
        client.post("/api/login", json={"username": alice, "password": "wrong"})
    assert delays[:3] == [0.0, 0.0, 0.0]
    assert delays[3] > 0 and delays[5] > delays[4] > delays[3]


def test_failures_at_once_queue_one_behind_the_other_then_are_refused_with_429(client, alice, monkeypatch):
    """Sent at once, guesses used to wait the same delay and then all be checked."""
    delays = []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        real_sleep(0)  # the others get to start meanwhile

    real_sleep = gevent.sleep
    monkeypatch.setattr(login.gevent, "sleep", sleep)
    # The clock stands still: the delays are the reservations alone, however slowly the
    # attempts start (on a busy machine they came out a few ms shorter).
    reserve = login.reserve_together
    monkeypatch.setattr(login, "reserve_together", lambda claims: reserve(claims, now=1000.0))
    wrong = {"username": alice, "password": "wrong"}
    attempts = [gevent.spawn(client.post, "/api/login", json=wrong) for _ in range(12)]
    gevent.joinall(attempts, raise_error=True)
    answers = [attempt.value for attempt in attempts]
    assert sorted(answer.status_code for answer in answers) == [401] * 7 + [429] * 5
    assert [round(delay, 2) for delay in sorted(delays)] == [0, 0, 0, 0.25, 0.75, 1.75, 3.75]
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert int(refused.headers["Retry-After"]) == 8  # the 8th attempt may start at 3.75 + 4 s
    assert "retry in" in refused.json["error"]


def test_a_success_restarts_the_user_but_does_not_wipe_the_address(client, alice, monkeypatch):
    monkeypatch.setattr(login, "_DUMMY_HASH", generate_password_hash("x", method="pbkdf2:sha256:1"))  # fast
    monkeypatch.setattr(login.gevent, "sleep", lambda seconds: None)
    for n in range(4):
        assert client.post("/api/login", json={"username": f"guessed-{n}", "password": "guess"}).status_code == 401
    client.post("/api/login", json={"username": alice, "password": "wrong"})
    assert client.post("/api/login", json={"username": alice, "password": "correct horse"}).status_code == 200
    assert f"{alice}@127.0.0.1" not in login.by_account.states
    assert login.by_address.states["127.0.0.1"].failures == 5


@pytest.mark.slow
def test_guessing_a_users_password_from_elsewhere_does_not_lock_the_user_out(client, alice, monkeypatch):
    """Refusals keyed by username alone let anyone keep a user from signing in."""
    monkeypatch.setattr(login.gevent, "sleep", lambda seconds: None)  # the queue fills at once
    attacker, owner = {"REMOTE_ADDR": "10.0.0.66"}, {"REMOTE_ADDR": "10.0.0.7"}
    answers = [
        client.post("/api/login", json={"username": alice, "password": f"guess {n}"}, environ_base=attacker)
        for n in range(12)
    ]
    assert 429 in {answer.status_code for answer in answers}
    mine = client.post("/api/login", json={"username": alice, "password": "correct horse"}, environ_base=owner)
    assert mine.status_code == 200


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_clients(pool, alice, monkeypatch):
    monkeypatch.setattr(login, "_DUMMY_HASH", generate_password_hash("x", method="pbkdf2:sha256:1"))  # fast
    app = app_with_pool(pool, monkeypatch, TRUSTED_PROXIES=1)
    proxied = {"REMOTE_ADDR": "10.0.0.1"}
    app.test_client().post(
        "/api/login",
        json={"username": "nobody", "password": "x"},
        headers={"X-Forwarded-For": "203.0.113.9"},
        environ_base=proxied,
    )
    assert set(login.by_address.states) == {"203.0.113.9"}


@pytest.mark.parametrize(
    "body",
    [
        [1, 2],
        "just a string",
        {"username": "u" * 65, "password": "x"},
        {"username": "a\u0000b", "password": "x"},
        {"username": "a\ud800b", "password": "x"},
    ],
    ids=["list", "string", "name too long", "NUL in the name", "lone surrogate in the name"],
)
def test_bad_sign_in_bodies_are_400_and_remember_nothing(client, alice, body):
    response = client.post("/api/login", json=body)
    assert response.status_code == 400 and "error" in response.json
    assert not login.by_address.states and not login.by_account.states


def test_a_huge_sign_in_body_is_refused_before_it_is_read(client, alice):
    response = client.post("/api/login", json={"username": "u" * 100_000, "password": "x"})
    assert response.status_code == 413


def test_the_event_loop_runs_while_passwords_are_checked(client, alice, monkeypatch):
    """Each check waits until a greenlet has run after it began: held in the event loop's
    thread, it would wait in vain (and say so) since no greenlet can run meanwhile."""
    waiting: list[threading.Event] = []
    ran_meanwhile: list[bool] = []
    running, most_running = [0], [0]
    counting = threading.Lock()
    real_check = login.passwords.check

    def check_once_a_greenlet_ran(stored_hash: str, password: str) -> tuple[bool, str | None]:
        with counting:
            running[0] += 1
            most_running[0] = max(most_running[0], running[0])
        greenlet_ran = threading.Event()
        waiting.append(greenlet_ran)
        ran_meanwhile.append(greenlet_ran.wait(timeout=10))
        with counting:
            running[0] -= 1
        return real_check(stored_hash, password)

    def ticker() -> None:
        while True:
            for event in list(waiting):
                event.set()
            gevent.sleep(0.001)

    monkeypatch.setattr(login.passwords, "check", check_once_a_greenlet_ran)
    ticking = gevent.spawn(ticker)
    try:
        logins = [
            gevent.spawn(client.post, "/api/login", json={"username": alice, "password": "correct horse"})
            for _ in range(4)
        ]
        gevent.joinall(logins, raise_error=True)
    finally:
        ticking.kill()
    assert [each.value.status_code for each in logins] == [200] * 4
    assert ran_meanwhile == [True] * 4
    assert most_running[0] <= login.HASHES_AT_ONCE


def test_login_can_be_switched_off(database_url):
    app = create_app({"TESTING": True, "DATABASE_URL": database_url, "JWT_SECRET": SECRET, "LOGIN_ENABLED": False})
    assert app.test_client().post("/api/login", json={"username": "a", "password": "b"}).status_code == 404


def test_token_command_prints_a_valid_token(runner, database_url):
    result = runner.invoke(args=["token", "cli-user"])
    assert result.exit_code == 0
    identity = verify_token(result.output.strip(), SECRET)
    assert sql(database_url, "SELECT username FROM users WHERE id = %s", (identity.user_id,)) == [("cli-user",)]


def test_init_db_is_safe_to_run_twice(runner):
    assert runner.invoke(args=["init-db"]).exit_code == 0
    assert runner.invoke(args=["init-db"]).exit_code == 0


def test_create_user_refuses_a_name_sign_in_would_not_take(runner):
    result = runner.invoke(args=["create-user", "n" * 65, "--password", "pw"])
    assert result.exit_code != 0 and "64" in result.output
