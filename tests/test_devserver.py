"""`make run`, `make token` and `make user` as a newcomer meets them (scripts/devserver.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from tests.support.databases import sql
from tests.support.identities import SECRET, unique
from tests.support.project import ROOT
from tests.support.servers import free_port
from tests.support.waiting import wait_for

# Each test starts the dev server or make in a subprocess: seconds each.
pytestmark = pytest.mark.slow

DEVSERVER = [sys.executable, str(ROOT / "scripts" / "devserver.py")]


def dev_environment(database_url: str, var_dir, **more: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "XDG_RUNTIME_DIR"}
    env.update(DATABASE_URL=database_url, JWT_SECRET=SECRET, CHAT_VAR_DIR=str(var_dir), **more)
    return env


def test_ctrl_c_stops_the_dev_server_quietly(database_url, tmp_path):
    """The terminal's Ctrl-C goes to the whole foreground process group: the server stops
    with status 0 and no traceback (a worker used to print one ending in SystemExit)."""
    port = free_port()
    env = dev_environment(database_url, tmp_path, WS_BIND_ADDR=f"127.0.0.1:{port}")
    output = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
    proc = subprocess.Popen(DEVSERVER, env=env, start_new_session=True, **output)
    try:

        def serving() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_for(serving, 30, "the dev server answering")
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
        printed, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = printed.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "Traceback" not in text and "SystemExit" not in text, text
    assert "Shutting down" in text


def test_the_database_url_file_is_for_its_owner_only(database_url, tmp_path):
    """`make user` (devserver.py flask create-user) writes var/database_url, which may hold
    a password: mode 0600, also when an older run left it readable by all."""
    old = tmp_path / "database_url"
    old.write_text("postgresql://old")
    old.chmod(0o644)
    name = unique("maker")
    command = [*DEVSERVER, "flask", "--app", "wsgi", "create-user", name, "--password", "pw"]
    result = subprocess.run(command, cwd=ROOT, env=dev_environment(database_url, tmp_path), capture_output=True)
    assert result.returncode == 0, result.stderr
    assert old.read_text() == database_url
    assert old.stat().st_mode & 0o777 == 0o600
    assert sql(database_url, "SELECT count(*) FROM users WHERE username = %s", (name,)) == [(1,)]


def test_the_embedded_database_starts_without_xdg_warnings():
    """pgserver's platformdirs warned twice on every command when XDG_RUNTIME_DIR is unset."""
    env = {key: value for key, value in os.environ.items() if key != "XDG_RUNTIME_DIR"}
    code = "import sys; sys.path.insert(0, 'scripts'); import devserver, pgserver"
    result = subprocess.run([sys.executable, "-W", "default", "-c", code], cwd=ROOT, env=env, capture_output=True)
    assert result.returncode == 0, result.stderr
    assert b"XDG_RUNTIME_DIR" not in result.stderr


def make(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "USER": "login-name"}  # as in any shell
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, env=env, capture_output=True, text=True)


def test_make_token_without_a_user_prints_the_usage_line():
    """The shell's USER (the login name) is not taken for the chat user."""
    result = make("token")
    assert result.returncode == 2
    assert result.stdout.strip() == "usage: make token USER=alice"


def test_make_user_without_a_user_prints_the_usage_line():
    result = make("user", "PASSWORD=secret")
    assert result.returncode == 2
    assert result.stdout.strip() == "usage: make user USER=alice PASSWORD=secret"
