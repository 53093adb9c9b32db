"""The `flask` commands of the app: init-db, create-user and token."""

from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from werkzeug.security import generate_password_hash

from . import db
from .names import USERNAME_MAX_CHARS, is_valid_username
from .tokens import issue_token


@click.command("init-db")
@with_appcontext
def init_db_command() -> None:
    """Create or upgrade the tables in DATABASE_URL (safe to run twice)."""
    db.load_schema(current_app.config["DATABASE_URL"])
    click.echo("schema loaded")


@click.command("create-user")
@with_appcontext
@click.argument("username")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
def create_user_command(username: str, password: str) -> None:
    """Create a user (or set its password) for standalone sign-in."""
    if not is_valid_username(username.strip()):
        raise click.BadParameter(f"1 to {USERNAME_MAX_CHARS} characters, no control characters", param_hint="USERNAME")
    user_id = db.upsert_user(current_app.config["DATABASE_URL"], username, generate_password_hash(password))
    click.echo(f"user {username} has id {user_id}")


@click.command("token")
@with_appcontext
@click.argument("username")
def token_command(username: str) -> None:
    """Print a token for USERNAME (created when missing), signed with JWT_SECRET."""
    config = current_app.config
    user_id = db.upsert_user(config["DATABASE_URL"], username)
    click.echo(issue_token(config["JWT_SECRET"], user_id, username, config["TOKEN_TTL_SECONDS"]))


def init_app(app: Flask) -> None:
    for command in (init_db_command, create_user_command, token_command):
        app.cli.add_command(command)
