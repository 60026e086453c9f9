# LuckRig: `make run` serves the whole platform on embedded defaults; `make test` runs every test.
# Both create .venv and install what they need on a fresh machine.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000
PG_SERVER ?= postgres://postgres@127.0.0.1:5432

.PHONY: install run migrate test test-sqlite test-postgres lint format bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/python manage.py migrate --noinput

# The tracker under Daphne with the demo rigs and the liveness monitor. Ctrl-C stops both.
run: export DEBUG ?= 1
run: migrate
	$(BIN)/python manage.py seed_demo
	@echo "LuckRig tracker on http://$(HOST):$(PORT)/  (API docs: /api/docs/, nodes: /api/nodes)"
	@$(BIN)/python manage.py monitor & MON=$$!; \
	  trap 'kill $$MON 2>/dev/null' EXIT INT TERM; \
	  $(BIN)/daphne -b $(HOST) -p $(PORT) luckrig_site.asgi:application

test: test-sqlite test-postgres

test-sqlite: install
	$(BIN)/python -m pytest

# The same suite on PostgreSQL, in a throw-away database, when a server answers at 127.0.0.1:5432.
test-postgres: install
	@if $(BIN)/python tests/pg_available.py "$(PG_SERVER)/postgres"; then \
	  echo "== the same suite on PostgreSQL ($(PG_SERVER)) =="; \
	  DATABASE_URL="$(PG_SERVER)/luckrig_ci_$$$$" $(BIN)/python -m pytest -p no:cacheprovider; \
	else \
	  echo "SKIPPED: the PostgreSQL run (no PostgreSQL server answers at $(PG_SERVER))"; \
	fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python bench/node_list.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
