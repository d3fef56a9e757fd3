# Two commands do everything on a fresh machine with Python 3.11:
#   make run    the whole stack on the embedded default (SQLite + filesystem broker)
#   make test   installs what the tests need and runs them on PostgreSQL + RabbitMQ

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
CHROMIUM := /usr/bin/chromium

.PHONY: run test lint format bench install install-dev system-packages clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime-installed: requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(VENV)/.runtime-installed $@

install: $(VENV)/.runtime-installed

install-dev: $(VENV)/.dev-installed

# System packages the tests use: Debian's Chromium, driven by Playwright
# (Playwright's own browser download is not used), a compose client to
# validate compose/ (no engine: --no-install-recommends keeps it out), and
# Prometheus with promtool and Alertmanager's amtool, which check, unit-test
# and evaluate the alert rules (compose/prometheus/alerts.yml), and kubectl,
# whose built-in kustomize renders deploy/kubernetes/ offline (no cluster).
system-packages:
	@test -x $(CHROMIUM) && command -v docker-compose >/dev/null && command -v promtool >/dev/null \
	  && command -v amtool >/dev/null && command -v kubectl >/dev/null || { \
	  apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    docker-compose prometheus prometheus-alertmanager && \
	  { command -v kubectl >/dev/null || \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client; }; }

run: install
	$(PY) manage.py up

test: lint install-dev system-packages
	$(PY) -m pytest

# The lint and format gate (ruff.toml); `make format` applies both fixes.
lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Benchmarks, not tests: real workers on RabbitMQ and PostgreSQL, each
# variant beside its baselines in the same run (BENCHMARKS.md).
bench: install-dev
	$(PY) -m bench all --quick

clean:
	rm -rf var test-artifacts .pytest_cache
