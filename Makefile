# Everything a fresh machine needs is installed from here: only the system python3 is assumed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PY_SOURCES := app tests scripts bench wsgi.py gunicorn.conf.py
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

.PHONY: install run stop-db db token user token-usage user-usage test test-python test-fast test-web lint web bench clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $@

# The user of `make token` and `make user`, from the command line only: the environment's
# USER is the login name, which is nobody's chat user.
NAME := $(if $(filter command line,$(origin USER_NAME)),$(USER_NAME),$(if $(filter command line,$(origin USER)),$(USER)))

# The built web page, and what it is built from: `make run` builds it again only when one
# of these changed.
WEB_PAGE := web/app/dist/index.html
WEB_SOURCES := $(shell find web/app/src web/use-chat/src -type f 2>/dev/null) \
	$(wildcard web/Makefile web/app/index.html web/app/*.json web/app/*.ts web/use-chat/*.json)

# Serve the chat on WS_BIND_ADDR (default 127.0.0.1:9001). Without DATABASE_URL an
# embedded PostgreSQL runs in ./var; the web client is built when npm is available.
run: install $(WEB_PAGE)
	$(PY) scripts/devserver.py

# Without npm, or when the build fails, the API alone is served (and the next run tries again).
$(WEB_PAGE): $(WEB_SOURCES)
	@if ! command -v npm >/dev/null 2>&1; then echo "npm not found: serving the API only"; \
	elif ! $(MAKE) -C web build; then echo "web client build failed: serving the API only"; fi

# Stop the embedded PostgreSQL of `make run` (it keeps running between runs).
stop-db:
	@if [ -f var/pgdata/postmaster.pid ]; then \
		pg_ctl=$$(ls $(VENV)/lib/python*/site-packages/pgserver/pginstall/bin/pg_ctl 2>/dev/null | head -1); \
		owner=$$(stat -c %U var/pgdata); \
		if [ "$$(id -u)" = 0 ] && [ "$$owner" != root ]; then su "$$owner" -s /bin/sh -c "$$pg_ctl -D var/pgdata -m fast stop"; \
		else "$$pg_ctl" -D var/pgdata -m fast stop; fi; \
	else echo "no embedded PostgreSQL running"; fi

# Load schema.sql into DATABASE_URL (safe to run twice, also on the legacy backend's database).
db: install
	@test -n "$(DATABASE_URL)" || (echo "set DATABASE_URL" && exit 2)
	$(VENV)/bin/flask --app wsgi init-db

# A token for USER on the dev server (the real ones come from another backend).
token: token-usage install
	@$(PY) scripts/devserver.py flask --app wsgi token "$(NAME)"

# A user who can sign in on the web page of the dev server: make user USER=alice PASSWORD=secret
user: user-usage install
	@$(PY) scripts/devserver.py flask --app wsgi create-user "$(NAME)" --password "$(PASSWORD)"

# Checked before anything is installed.
token-usage:
	@test -n "$(NAME)" || (echo "usage: make token USER=alice" && exit 2)
user-usage:
	@test -n "$(NAME)" -a -n "$(PASSWORD)" || (echo "usage: make user USER=alice PASSWORD=secret" && exit 2)

test: test-python test-web

test-python: lint
	$(VENV)/bin/pytest -q

# The quick loop while working: leaves out the multi-node and the slow tests (`make test` runs them).
test-fast: install
	$(VENV)/bin/pytest -q -m "not cluster and not slow"

test-web:
	@if [ -f web/Makefile ]; then $(MAKE) -C web test; else echo "no web client yet"; fi

lint: install
	$(VENV)/bin/ruff check $(PY_SOURCES)
	$(VENV)/bin/ruff format --check $(PY_SOURCES)

web:
	$(MAKE) -C web build

bench: install
	$(MAKE) -C bench bench

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
