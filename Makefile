# Switchboard developer commands. `make help` lists them.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JS_DEPS := clients/js/node_modules/.package-lock.json
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# DEVELOPMENT ONLY: the JWT secret of `make run` and `make token`. It is public, so never
# use it for a deployment; set SWITCHBOARD_JWT_SECRET in the environment to override it.
SWITCHBOARD_JWT_SECRET ?= switchboard-development-secret-not-for-production

.PHONY: help venv services run token test unit chaos bench lint fmt schemas js-deps browser-deps deploy-tools

help:
	@echo "make run               start RabbitMQ/Redis/PostgreSQL if needed, then a router,"
	@echo "                       an offline store and gateways on ws://127.0.0.1:8001/ws and :8002/ws"
	@echo "                       and the web chat page on http://127.0.0.1:8000/"
	@echo "make token USER=alice  print a development JWT for uid alice (valid 24 h)"
	@echo "make test              every test (starts the local services if they are down)"
	@echo "make unit              unit tests only (no services needed)"
	@echo "make chaos             every fault scenario under the full load; prints the README's table"
	@echo "                       (restarts the local RabbitMQ, Redis and PostgreSQL)"
	@echo "make bench             Switchboard against python-socketio, a websockets relay and raw"
	@echo "                       aio-pika, 3 runs (~10 min); writes bench/RESULTS.md"
	@echo "make deploy-tools      install kubectl (Debian kubernetes-client) for tests/deploy/"
	@echo "make lint              ruff format --check, ruff check, mypy"
	@echo "make fmt               ruff format and ruff check --fix"
	@echo "make schemas           regenerate proto/schemas/ from the frame and envelope classes"
	@echo "make venv              create .venv and install the project with its dev and bench dependencies"
	@echo "                       and the Python client (clients/python), editable"
	@echo "make js-deps           npm ci in clients/js (the JS client's test dependencies)"
	@echo "make browser-deps      install Debian's chromium for the browser tests, if missing"

venv: $(STAMP)

# Reinstall whenever pyproject.toml changes. The client library is editable in compat mode
# (a path entry), so that mypy finds it. Playwright (a dev dependency) drives Debian's
# Chromium; it never downloads a browser.
$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[dev,bench]'
	$(BIN)/python -m pip install -e clients/python --config-settings editable_mode=compat
	touch $@

js-deps: $(JS_DEPS)

$(JS_DEPS): clients/js/package-lock.json
	cd clients/js && npm ci --no-audit --no-fund

browser-deps:
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }

services:
	bash scripts/ensure-services.sh

run: venv services
	SWITCHBOARD_JWT_SECRET='$(SWITCHBOARD_JWT_SECRET)' $(BIN)/python scripts/run_stack.py

token: venv
	@SWITCHBOARD_JWT_SECRET='$(SWITCHBOARD_JWT_SECRET)' $(BIN)/python scripts/dev_token.py '$(USER)'

test: venv services js-deps browser-deps deploy-tools
	PYTHONASYNCIODEBUG=1 $(BIN)/pytest

unit: venv
	PYTHONASYNCIODEBUG=1 $(BIN)/pytest tests/unit

chaos: venv services
	$(BIN)/python -m tests.chaos

bench: venv services
	$(BIN)/python -m bench

lint: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/mypy tests scripts
	$(BIN)/mypy --strict clients/python/switchboard_client

fmt: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

schemas: venv
	$(BIN)/python -m proto.schemagen

# tests/deploy/ renders the Kustomize overlay with `kubectl kustomize`, offline.
deploy-tools:
	command -v kubectl >/dev/null 2>&1 || \
		{ apt-get update && apt-get install -y kubernetes-client; }
