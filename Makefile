# neural-reg: `make demo` runs the whole pipeline on the embedded default; `make test` runs the test suite.
# Every target is idempotent: a second run reuses the virtual environment, the server and computed rows.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install server demo readme test bench db-up db-down clean-db

install: $(STAMP) server

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, alone: pip then takes the CPU build where that is what the machine offers
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[test]'
	touch $(STAMP)

# system packages from apt where missing: a MySQL-family server binary (unless a shared server is configured,
# DJ_HOST) and graphviz's `dot` (the DataJoint diagram in the report and `neural-reg diagram`)
server:
	@SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); missing=""; \
	if [ -z "$$DJ_HOST" ] && ! command -v mariadbd >/dev/null && ! command -v mysqld >/dev/null \
	    && ! [ -x /usr/sbin/mariadbd ] && ! [ -x /usr/sbin/mysqld ]; then missing="mariadb-server"; fi; \
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

test: install
	$(BIN)/python -m pytest -q

bench: install
	@for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done
