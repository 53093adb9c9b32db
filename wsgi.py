"""WSGI entry point: `gunicorn -c gunicorn.conf.py wsgi:app`.

The settings of the whole process are made here, not in the app factory.
"""

import logging

from app import create_app, db, redact
from app.config import load_dotenv_file

load_dotenv_file()
app = create_app()

# No thread name in log records: under gevent each greenlet that logs would get a
# dummy Thread object made and torn down for it.
logging.logThreads = False
logging.basicConfig(
    level=str(app.config["LOG_LEVEL"]).upper(),
    format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s",
)
redact.install()  # no token in any log line of the process, gunicorn's included
# psycopg2 waits through gevent from the start, not only once the chat runtime exists:
# a /healthz or a login before the first WebSocket must not block the worker either.
db.make_cooperative()
