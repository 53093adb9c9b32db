"""The `flask` commands of the app: init-db, create-user and token."""

from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from . import accounts, passwords, schema
from .names import local_username
from .tokens import issue_token


@click.command("init-db")
@with_appcontext
def init_db_command() -> None:
    """Create or upgrade the tables in DATABASE_URL (safe to run twice)."""
    schema.load_schema(current_app.config["DATABASE_URL"])
    click.echo("schema loaded")


@click.command("create-user")
@with_appcontext
@click.argument("username")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--reset-password", is_flag=True, help="Give a user made here (who has a password) a new one.")
def create_user_command(username: str, password: str, reset_password: bool) -> None:
    """Create a user who signs in with a password (standalone sign-in).

    The name is stored in Unicode NFC without surrounding spaces; one holding invisible or
    text-direction characters is refused. A name that exists is refused: with
    --reset-password its password is replaced, but only if it has one. A user without a
    password belongs to the tokens' issuer and never gets one here (whoever signed in
    with it would read that user's direct messages).
    """
    name = _local_name(username)
    try:
        user_id, created = accounts.create_user(
            current_app.config["DATABASE_URL"], name, passwords.hash_password(password), reset_password
        )
    except accounts.Refused as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"user {name} {'created' if created else 'has a new password'}, id {user_id}")


@click.command("token")
@with_appcontext
@click.argument("username")
def token_command(username: str) -> None:
    """Print a token for USERNAME (created without a password when missing), signed with
    JWT_SECRET: what the tokens' issuer would hand out."""
    config = current_app.config
    name = _local_name(username)
    user_id = accounts.token_user(config["DATABASE_URL"], name)
    click.echo(issue_token(config["JWT_SECRET"], user_id, name, config["TOKEN_TTL_SECONDS"]))


def _local_name(raw: str) -> str:
    try:
        return local_username(raw)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="USERNAME") from None


def init_app(app: Flask) -> None:
    for command in (init_db_command, create_user_command, token_command):
        app.cli.add_command(command)
