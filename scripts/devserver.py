"""`make run`: serve the chat on WS_BIND_ADDR with nothing installed but Python.

Without DATABASE_URL an embedded PostgreSQL (the pgserver package) is started in
./var/pgdata and kept running between runs. Without JWT_SECRET a development secret is
made once and kept in ./var/jwt_secret. The schema is loaded (it is safe to load again),
then gunicorn takes over this process.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"


def dev_database_url() -> str:
    """Start (or reuse) the embedded PostgreSQL and return the URL of its `chat` database."""
    import pgserver

    server = pgserver.get_server(VAR / "pgdata", cleanup_mode=None)
    exists = server.psql("SELECT 1 FROM pg_database WHERE datname = 'chat';")
    if "1 row" not in exists:
        server.psql("CREATE DATABASE chat;")
    return server.get_uri("chat")


def dev_secret() -> str:
    path = VAR / "jwt_secret"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


# Users a newcomer can sign in as on the page of the embedded development server.
DEMO_USERS = ("alice", "bob")
DEMO_PASSWORD = "chat-demo"


def create_demo_users(database_url: str) -> None:
    """alice and bob, password chat-demo, in the embedded database only (never in yours)."""
    from werkzeug.security import generate_password_hash

    from app import accounts

    for name in DEMO_USERS:
        try:
            accounts.create_user(database_url, name, generate_password_hash(DEMO_PASSWORD), reset_password=True)
        except accounts.Refused as exc:
            print(f"no demo user {name}: {exc}", file=sys.stderr)
    print(f"sign in on the page as {' or '.join(DEMO_USERS)}, password {DEMO_PASSWORD}", file=sys.stderr)


def prepare_environment() -> dict[str, str]:
    """DATABASE_URL and JWT_SECRET for the dev server: from the environment or ./var."""
    from dotenv import load_dotenv

    load_dotenv(ROOT / ".env", override=False)
    VAR.mkdir(exist_ok=True)
    env = dict(os.environ)
    if not env.get("DATABASE_URL"):
        env["DATABASE_URL"] = dev_database_url()
        env["CHAT_EMBEDDED_DATABASE"] = "1"
        print(f"embedded PostgreSQL in {VAR / 'pgdata'}", file=sys.stderr)
    if not env.get("JWT_SECRET"):
        env["JWT_SECRET"] = dev_secret()
        print("using the development JWT secret in var/jwt_secret", file=sys.stderr)
    (VAR / "database_url").write_text(env["DATABASE_URL"])
    return env


def main() -> None:
    env = prepare_environment()
    sys.path.insert(0, str(ROOT))
    from app.db import load_schema

    load_schema(env["DATABASE_URL"])
    if env.get("CHAT_EMBEDDED_DATABASE") and len(sys.argv) == 1:
        create_demo_users(env["DATABASE_URL"])
    if len(sys.argv) > 1:
        # `devserver.py flask token alice`: a command against the dev database.
        os.execvpe(str(ROOT / ".venv" / "bin" / sys.argv[1]), sys.argv[1:], env)
    bind = env.get("WS_BIND_ADDR") or "127.0.0.1:9001"
    print(f"chat server on http://{bind}  (WebSocket ws://{bind}/ws)", file=sys.stderr)
    gunicorn = str(ROOT / ".venv" / "bin" / "gunicorn")
    os.chdir(ROOT)
    os.execvpe(gunicorn, [gunicorn, "-c", "gunicorn.conf.py", "wsgi:app"], env)


if __name__ == "__main__":
    main()
