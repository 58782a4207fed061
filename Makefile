# Two commands matter: `make demo` and `make test` (see README.md). Both install first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
PYTHON ?= python3.11

# Airflow runs on SQLite with its home inside the repo (ignored by git); no example DAGs.
export AIRFLOW_HOME                 := $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER   := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__PARALLELISM   := 4
export GX_ANALYTICS_ENABLED         := False

.PHONY: help install system-deps airflow-db demo up down test test-ui test-unit test-integration test-faults test-distributed fuzz lint lock bench clean

help:
	@echo "make demo   - set up, then run the export against the sandbox storefront and embedded SFTP"
	@echo "make up     - the sandbox store and Airflow's UI on 127.0.0.1:8080 until Ctrl-C (make down stops it)"
	@echo "make test   - set up, then run the whole test suite (DAG integrity, unit, integration, UI)"
	@echo "make fuzz   - the property tests (tests/fuzz) with the long hypothesis profile (minutes)"
	@echo "make lint   - ruff (incl. Airflow AIR rules)"
	@echo "make lock   - recompile requirements.txt from requirements.in"
	@echo "make bench  - export benchmarks (bench/README.md)"

install: $(VENV)/.installed

# uv installs the pinned lock, then the project itself (editable) so `order_integration`
# imports from anywhere with no PYTHONPATH.
# --compile-bytecode: uv writes no .pyc by default, and where PYTHONDONTWRITEBYTECODE is set (CI
# images often set it) no process ever writes one, so every Python process — each `airflow dags
# test`, scheduler, worker and task — compiled Airflow, pandas and GX from source again: about 9 s
# of the ~28 s of one export `dags test` run. Compiling once here costs about 40 s on 2 cores.
$(VENV)/.installed: requirements.txt pyproject.toml
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	@test -x $(PY) || uv venv --quiet --python $(PYTHON) $(VENV)
	uv pip install --quiet --compile-bytecode --python $(PY) -r requirements.txt
	uv pip install --quiet --python $(PY) --no-deps -e .
	@touch $@

# Servers the tests start themselves on loopback: OpenSSH's sshd (a real SFTP server) for the
# integration tier; PostgreSQL and Redis for the distributed (Celery) tier; Debian's chromium,
# which Playwright drives in the UI tests. Installed only where missing.
system-deps:
	@missing=""; \
	[ -x /usr/sbin/sshd ] || missing="$$missing openssh-server"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (needed by the integration and distributed tests)"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get install -y -qq $$missing >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing >/dev/null; }; \
	fi

airflow-db: install
	@mkdir -p $(AIRFLOW_HOME)
	@$(VENV)/bin/airflow db migrate >$(AIRFLOW_HOME)/db-migrate.log 2>&1 || \
	  { tail -20 $(AIRFLOW_HOME)/db-migrate.log; exit 1; }
	@$(PY) -m order_integration pools >$(AIRFLOW_HOME)/pools.json && \
	  $(VENV)/bin/airflow pools import $(AIRFLOW_HOME)/pools.json >/dev/null
	@$(PY) -m order_integration ledger migrate

demo: airflow-db
	$(PY) -m sandbox.demo

# The sandbox store (storefront, SFTP, ERP simulator) and Airflow's four components on loopback,
# in the foreground until Ctrl-C; `make down` stops one left in the background (sandbox/stack.py).
# It migrates .airflow's database itself, after checking that no stack is up and the ports are free.
API_PORT        ?= 8080
STOREFRONT_PORT ?= 8081
SFTP_PORT       ?= 2222
REALTIME        ?=
up: install
	@$(PY) -m sandbox.stack up --api-port $(API_PORT) --storefront-port $(STOREFRONT_PORT) --sftp-port $(SFTP_PORT) \
	  $(if $(REALTIME),--realtime)

down:
	@$(PY) -m sandbox.stack down

# Tests run in TEST_WORKERS parallel processes (pytest-xdist; how units are split and ordered:
# tests/conftest.py, docs/testing.md). Most long tests wait on Airflow's scheduler and on retry
# back-offs, so 3 fit 2 cores. TEST_WORKERS=0 runs one process.
TEST_WORKERS ?= 3
test: install system-deps
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n $(TEST_WORKERS)

test-unit: install
	$(PY) -m pytest -m "unit or dags"

test-integration: install system-deps
	$(PY) -m pytest -m integration

test-ui: install system-deps
	$(PY) -m pytest -m ui

test-faults: install system-deps
	$(PY) -m pytest -m faults

test-distributed: install system-deps
	$(PY) -m pytest -m distributed

# `make test` runs tests/fuzz too, with the bounded `ci` profile (seconds); this is the long run
# whose figures go in docs/reliability.md.
fuzz: install
	HYPOTHESIS_PROFILE=long $(PY) -m pytest -m fuzz -p no:cacheprovider --hypothesis-show-statistics tests/fuzz

lint: install
	$(VENV)/bin/ruff check .

lock:
	uv pip compile --quiet --python-version 3.11 requirements.in -o requirements.txt

bench: install
	$(PY) bench/export_bench.py

clean:
	rm -rf .airflow .sandbox .pytest_cache .ruff_cache
