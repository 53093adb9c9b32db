"""The chat server: a Flask application factory."""

from __future__ import annotations

import logging

from flask import Flask

from . import redact
from .config import DEFAULTS, from_environment, load_dotenv_file


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: defaults, then the environment (and .env), then `test_config`."""
    load_dotenv_file()
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    app.config.update(from_environment())
    app.config.from_prefixed_env()
    if test_config:
        app.config.update(test_config)
    # No thread name in log records: under gevent each greenlet that logs would get a
    # dummy Thread object made and torn down for it (2-3 % of a connect's CPU).
    logging.logThreads = False
    logging.basicConfig(
        level=str(app.config["LOG_LEVEL"]).upper(),
        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s",
    )
    redact.install()  # no token in any log line of the process, gunicorn's included

    from . import db, http, login, websocket

    # psycopg2 waits through gevent from the start, not only once the chat runtime exists:
    # a /healthz or a login before the first WebSocket must not block the worker either.
    db.make_cooperative()
    app.config["SOCK_SERVER_OPTIONS"] = websocket.server_options(app.config)
    if app.config["TRUSTED_PROXIES"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=app.config["TRUSTED_PROXIES"])  # type: ignore[method-assign]
    app.wsgi_app = websocket.upgrade_list_as_websocket(app.wsgi_app)  # type: ignore[method-assign]
    db.init_app(app)
    app.register_blueprint(websocket.bp)
    app.register_blueprint(http.bp)
    app.register_blueprint(login.bp)
    return app
