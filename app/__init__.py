"""The chat server: a Flask application factory."""

from __future__ import annotations

from flask import Flask

from .config import DEFAULTS, from_environment


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: defaults, then the environment, then `test_config`.

    Nothing starts here (no pool, no greenlet, no logging set-up): the chat runtime is
    made on first use in the worker process (app/runtime.py), and the process-wide
    settings are the entry point's (wsgi.py).
    """
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    app.config.update(from_environment())
    app.config.from_prefixed_env()
    if test_config:
        app.config.update(test_config)

    from . import cli, http, login, runtime, websocket

    app.config["SOCK_SERVER_OPTIONS"] = websocket.server_options(app.config)
    if app.config["TRUSTED_PROXIES"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=app.config["TRUSTED_PROXIES"])  # type: ignore[method-assign]
    app.wsgi_app = websocket.upgrade_list_as_websocket(app.wsgi_app)  # type: ignore[method-assign]
    runtime.Chat(app)
    cli.init_app(app)
    app.register_blueprint(websocket.bp)
    app.register_blueprint(http.bp)
    app.register_blueprint(login.bp)
    return app
