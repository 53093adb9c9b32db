"""HTTP routes through Flask's test client: health, metrics, the page, sign-in."""

from __future__ import annotations

import pytest
from conftest import SECRET, sql

from app import create_app, login
from app.tokens import verify_token


@pytest.fixture
def app(database_url):
    return create_app({"TESTING": True, "DATABASE_URL": database_url, "JWT_SECRET": SECRET})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


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
    login.failures_by_key.clear()
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


@pytest.mark.parametrize("body", [None, {}, {"username": "x"}, {"username": 1, "password": 2}])
def test_login_needs_username_and_password(client, body):
    assert client.post("/api/login", json=body).status_code == 400


def test_repeated_failures_are_slowed_down(client, alice, monkeypatch):
    delays = []
    monkeypatch.setattr(login.gevent, "sleep", delays.append)
    for _ in range(6):
        client.post("/api/login", json={"username": alice, "password": "wrong"})
    assert delays[:3] == [0.0, 0.0, 0.0]
    assert delays[3] > 0 and delays[5] > delays[4] > delays[3]


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
