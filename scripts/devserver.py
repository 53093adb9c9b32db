"""`make run`: serve the chat on WS_BIND_ADDR with nothing installed but Python.

Without DATABASE_URL an embedded PostgreSQL (the pgserver package) is started in
./var/pgdata and kept running between runs. Without JWT_SECRET a development secret is
made once and kept in ./var/jwt_secret. The schema is loaded (it is safe to load again),
then gunicorn serves until Ctrl-C. CHAT_VAR_DIR names another folder than ./var.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("CHAT_VAR_DIR") or ROOT / "var")

# platformdirs (for pgserver) warns when XDG_RUNTIME_DIR is unset (containers, su, ssh
# without a session), and uses /tmp/runtime-UID, which serves as well.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")


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
        write_private(path, secrets.token_urlsafe(32))
    return path.read_text().strip()


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read (it holds a secret or a password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        os.fchmod(fd, 0o600)  # os.open's mode applies only to a new file
        file.write(text)


# Users a newcomer can sign in as on the page of the embedded development server.
DEMO_USERS = ("alice", "bob")
DEMO_PASSWORD = "chat-demo"


def create_demo_users(database_url: str) -> None:
    """alice and bob, password chat-demo, in the embedded database only (never in yours)."""
    from app import accounts, passwords

    for name in DEMO_USERS:
        try:
            accounts.create_user(database_url, name, passwords.hash_password(DEMO_PASSWORD), reset_password=True)
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
    write_private(VAR / "database_url", env["DATABASE_URL"])
    return env


def main() -> None:
    env = prepare_environment()
    sys.path.insert(0, str(ROOT))
    from app.schema import load_schema

    load_schema(env["DATABASE_URL"])
    if env.get("CHAT_EMBEDDED_DATABASE") and len(sys.argv) == 1:
        create_demo_users(env["DATABASE_URL"])
    if len(sys.argv) > 1:
        # `devserver.py flask token alice`: a command against the dev database.
        os.execvpe(str(ROOT / ".venv" / "bin" / sys.argv[1]), sys.argv[1:], env)
    bind = env.get("WS_BIND_ADDR") or "127.0.0.1:9001"
    print(f"chat server on http://{bind}  (WebSocket ws://{bind}/ws); Ctrl-C stops it", file=sys.stderr)
    sys.exit(serve(env))


def serve(env: dict[str, str]) -> int:
    """Run gunicorn until it stops; return its exit status.

    gunicorn runs in a process group of its own, so that the terminal's Ctrl-C reaches its
    master alone, which stops the workers: a worker that got the SIGINT too, besides its
    master's SIGQUIT, would exit twice with a traceback.
    """
    gunicorn = str(ROOT / ".venv" / "bin" / "gunicorn")
    started: list[subprocess.Popen] = []

    def forward(signum: int, frame) -> None:
        # SIGHUP (the terminal closed) would make gunicorn reload: it is told to stop.
        for proc in started:
            proc.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)

    for each in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(each, forward)
    command = [gunicorn, "-c", "gunicorn.conf.py", "wsgi:app"]
    started.append(subprocess.Popen(command, cwd=ROOT, env=env, process_group=0))
    return started[0].wait()


if __name__ == "__main__":
    main()
