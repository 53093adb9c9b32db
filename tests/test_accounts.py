"""`flask create-user` and `flask token` against a real database: who may get a password,
which ids users made here get beside the tokens' users, and what names are stored."""

from __future__ import annotations

import pytest

from app import create_app, passwords
from app.tokens import verify_token
from tests.support.clients import Client
from tests.support.databases import sql
from tests.support.identities import SECRET, make_token, new_user_id, unique
from tests.support.servers import Server

# Each test runs the command line against a database of its own.
pytestmark = pytest.mark.slow

BIGGEST_ID = 2**63 - 1


def cli(database_url: str, *args: str):
    """Run a `flask` command of the app, as `flask --app wsgi ...` would."""
    app = create_app({"TESTING": True, "DATABASE_URL": database_url, "JWT_SECRET": SECRET})
    return app.test_cli_runner().invoke(args=list(args))


def create_user(database_url: str, name: str, password: str = "pw", *flags: str):
    return cli(database_url, "create-user", name, "--password", password, *flags)


def connect_token_user(server: Server, user_id: int, name: str) -> None:
    """The issuer's user connects once: the server stores its row (without a password)."""
    client = Client.connect(server.url, make_token(user_id, name))
    client.expect("welcome")
    client.close()


def stored(database_url: str, name: str) -> list[tuple]:
    return sql(database_url, "SELECT id, password FROM users WHERE username = %s", (name,))


def test_a_token_users_name_is_not_handed_over(server, database_url):
    """erin came with a token: a password on her row would let whoever signs in as erin
    read the DMs sent to her. Refused, with or without --reset-password."""
    erin, user_id = unique("erin"), new_user_id()
    connect_token_user(server, user_id, erin)
    for flags in ((), ("--reset-password",)):
        result = create_user(database_url, erin, "pw", *flags)
        assert result.exit_code == 1, result.output
        assert "user of the tokens' issuer" in result.output and str(user_id) in result.output
    assert stored(database_url, erin) == [(user_id, None)]


def test_a_local_users_password_changes_only_when_asked(database_url):
    name = unique("local")
    created = create_user(database_url, name, "first")
    assert created.exit_code == 0 and "created" in created.output
    [(user_id, first_hash)] = stored(database_url, name)
    again = create_user(database_url, name, "second")
    assert again.exit_code == 1 and "--reset-password" in again.output
    assert stored(database_url, name) == [(user_id, first_hash)]
    reset = create_user(database_url, name, "second", "--reset-password")
    assert reset.exit_code == 0 and "new password" in reset.output
    [(same_id, new_hash)] = stored(database_url, name)
    assert same_id == user_id and passwords.check(new_hash, "second") == (True, None)


def test_a_name_is_stored_stripped_and_in_nfc(database_url):
    name = unique("jose")
    result = create_user(database_url, f"  {name}e\u0301 ")
    assert result.exit_code == 0, result.output
    assert len(stored(database_url, f"{name}é")) == 1


@pytest.mark.parametrize("hidden", ["\u202e", "\u200b", "\ufeff", "\u3164"], ids=["RLO", "ZWSP", "BOM", "filler"])
def test_a_name_with_a_character_not_shown_is_refused(database_url, hidden):
    name = unique("hidden")
    result = create_user(database_url, f"{name}{hidden}")
    assert result.exit_code == 2 and "invisible" in result.output
    assert stored(database_url, f"{name}{hidden}") == [] and stored(database_url, name) == []


def test_the_token_command_makes_a_user_without_a_password(database_url):
    name = unique("dev")
    result = cli(database_url, "token", name)
    assert result.exit_code == 0, result.output
    identity = verify_token(result.output.strip(), SECRET)
    assert stored(database_url, name) == [(identity.user_id, None)]
    assert verify_token(cli(database_url, "token", name).output.strip(), SECRET).user_id == identity.user_id


@pytest.fixture
def own_server(fresh_database):
    """A server on a database of its own: the tests below move its id sequence."""
    url = fresh_database()
    srv = Server(url).start()
    yield srv
    srv.stop()


def test_a_token_with_the_biggest_id_leaves_create_user_working(own_server):
    url = own_server.database_url
    connect_token_user(own_server, BIGGEST_ID, "huge")
    for name in ("local-1", "local-2"):
        result = create_user(url, name)
        assert result.exit_code == 0, result.output
    ids = sql(url, "SELECT id FROM users WHERE username LIKE 'local-%%' ORDER BY id")
    assert [row[0] for row in ids] == [1, 2]
    assert stored(url, "huge") == [(BIGGEST_ID, None)]


def test_token_users_on_the_next_ids_are_skipped_by_create_user(own_server):
    """The issuer's ids 1, 2 and 4 (the sequence's next values) arrive first: users made
    here get the free ones, 3 then 5, and the token users' rows are left as they were."""
    url = own_server.database_url
    for user_id in (1, 2, 4):
        connect_token_user(own_server, user_id, f"token-{user_id}")
    assert create_user(url, "local-a").exit_code == 0
    assert cli(url, "token", "local-b").exit_code == 0
    assert sql(url, "SELECT id, username, password IS NULL FROM users ORDER BY id") == [
        (1, "token-1", True),
        (2, "token-2", True),
        (3, "local-a", False),
        (4, "token-4", True),
        (5, "local-b", True),
    ]
