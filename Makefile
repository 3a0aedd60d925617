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
# The services refuse it unless SWITCHBOARD_DEVELOPMENT=on, which `make run` sets.
SWITCHBOARD_JWT_SECRET ?= switchboard-development-secret-not-for-production

.PHONY: help venv lock services run token test unit chaos chaos-cluster bench lint fmt schemas js-deps browser-deps deploy-tools

help:
	@echo "make run               start RabbitMQ/Redis/PostgreSQL if needed, then a router,"
	@echo "                       an offline store and gateways on ws://127.0.0.1:8001/ws and :8002/ws"
	@echo "                       and the web chat page on http://127.0.0.1:8000/; on a PostgreSQL"
	@echo "                       that asks for a password, set SWITCHBOARD_POSTGRES_DSN=postgresql://"
	@echo "                       USER:PASSWORD@127.0.0.1:5432/DATABASE (README, Quick start)"
	@echo "make token USER=alice  print a development JWT for uid alice (valid 24 h)"
	@echo "make test              every test (starts the local services if they are down)"
	@echo "make unit              unit tests only (no services needed)"
	@echo "make chaos             every fault scenario under the full load; prints the README's table"
	@echo "                       (restarts the local RabbitMQ, Redis and PostgreSQL)"
	@echo "make chaos-cluster     the scenarios on engines they start themselves, full load:"
	@echo "                       Redis Sentinel, Redis Cluster, a RabbitMQ cluster, a PostgreSQL"
	@echo "                       pair (the local services keep running)"
	@echo "make bench             Switchboard against python-socketio, a websockets relay and raw"
	@echo "                       aio-pika, 3 runs (~20 min); writes bench/RESULTS.md"
	@echo "make deploy-tools      check kubectl (1.27+) and install promtool (Debian prometheus)"
	@echo "                       for tests/deploy/"
	@echo "make lint              ruff format --check, ruff check, mypy"
	@echo "make fmt               ruff format and ruff check --fix"
	@echo "make schemas           regenerate proto/schemas/ from the frame and envelope classes,"
	@echo "                       and k8s/rabbitmq/definitions.json from the topology"
	@echo "make venv              create .venv from uv.lock: the project with its dev and bench"
	@echo "                       dependencies and the Python client (clients/python), editable"
	@echo "make lock              update uv.lock: every dependency to the newest release that"
	@echo "                       pyproject.toml admits (run it after editing pyproject.toml)"
	@echo "make js-deps           npm ci in clients/js (the JS client's test dependencies)"
	@echo "make browser-deps      install Debian's chromium for the browser tests, if missing"

venv: $(STAMP)

# Every distribution in .venv comes from uv.lock, at the version it pins: `uv sync --frozen`
# installs the lock as it is (it never re-resolves) and removes whatever the lock does not name.
# uv itself is one of the locked dev dependencies. A .venv without it (a fresh clone) is made by
# a copy of uv at the locked version, put aside by pip, so that no pip or setuptools is seeded.
# The client library (clients/python) is an editable install in compat mode (a path entry), so
# that mypy finds it; Playwright (a dev dependency) drives Debian's Chromium and never
# downloads a browser.
UV := $(BIN)/uv
UV_VERSION = $(shell sed -n '/^name = "uv"$$/{n;s/^version = "\(.*\)"$$/\1/p;}' uv.lock)
UV_BOOTSTRAP := .uv-bootstrap
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never

$(STAMP): uv.lock pyproject.toml clients/python/pyproject.toml
	test -x $(UV) || { \
		rm -rf $(VENV) $(UV_BOOTSTRAP) \
		&& $(PYTHON) -m pip install --quiet --target $(UV_BOOTSTRAP) 'uv==$(UV_VERSION)' \
		&& $(UV_BOOTSTRAP)/bin/uv sync --frozen --all-extras \
		&& rm -rf $(UV_BOOTSTRAP); }
	$(UV) lock --check --offline
	$(UV) sync --frozen --all-extras
	touch $@

# Re-resolve every dependency to the newest release that pyproject.toml's ranges admit, and
# write uv.lock. Run it after changing a dependency in pyproject.toml, then `make test`.
lock: venv
	$(UV) lock --upgrade

js-deps: $(JS_DEPS)

$(JS_DEPS): clients/js/package-lock.json
	cd clients/js && npm ci --no-audit --no-fund

browser-deps:
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }

services:
	bash scripts/ensure-services.sh

run: venv services
	SWITCHBOARD_DEVELOPMENT=on SWITCHBOARD_JWT_SECRET='$(SWITCHBOARD_JWT_SECRET)' \
		$(BIN)/python scripts/run_stack.py

token: venv
	@SWITCHBOARD_JWT_SECRET='$(SWITCHBOARD_JWT_SECRET)' $(BIN)/python scripts/dev_token.py '$(USER)'

# Two passes: the tests that may share the machine in $(TEST_WORKERS) processes (pytest-xdist, one
# file per process at a time), then the exclusive ones (tests/chaos: they restart RabbitMQ, Redis
# and PostgreSQL or start clusters of their own) alone, one after another.
TEST_WORKERS ?= 3

test: venv services js-deps browser-deps deploy-tools
	PYTHONASYNCIODEBUG=1 $(BIN)/pytest -m "not exclusive" -n $(TEST_WORKERS) --dist loadfile --durations=30
	PYTHONASYNCIODEBUG=1 $(BIN)/pytest -m exclusive --durations=10

unit: venv
	PYTHONASYNCIODEBUG=1 $(BIN)/pytest tests/unit

chaos: venv services
	$(BIN)/python -m tests.chaos

chaos-cluster: venv services
	$(BIN)/python -m tests.chaos --own-engines

bench: venv services
	$(BIN)/python -m bench

lint: venv
	$(UV) lock --check --offline
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
	$(BIN)/python -m proto.definitions

# tests/deploy/ renders the Kustomize overlay with `kubectl kustomize`, offline: it needs the
# kustomize 5 of kubectl 1.27 or later (components, `labels` on pod templates), which this
# machine image ships; Debian's kubernetes-client (1.20, kustomize 2) cannot render it. It checks
# and unit-tests the alerts with promtool, from Debian's prometheus package (only the promtool
# command is used; the package's server is not needed).
deploy-tools:
	@kubectl version --client 2>/dev/null | grep -q '^Kustomize Version: v[5-9]' || \
		{ echo "tests/deploy needs kubectl 1.27 or later (kustomize 5) on the PATH"; exit 1; }
	command -v promtool >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends prometheus; }
