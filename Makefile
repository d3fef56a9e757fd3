# Two commands do everything on a fresh machine with Python 3.11:
#   make run    the whole stack on the embedded default (SQLite + filesystem broker)
#   make test   installs what the tests need and runs them on PostgreSQL + RabbitMQ

PYTHON ?= python3.11
VENV := .venv
# The peers that `python -m bench peers` measures the kit against, in a
# virtualenv of their own so the kit's requirements stay as they are.
PEERS_VENV := .venv-peers
PY := $(VENV)/bin/python
CHROMIUM := /usr/bin/chromium

.PHONY: run test lint format bench peers-venv install install-dev system-packages clean

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
# (Playwright's own browser download is not used), and a compose client to
# validate compose/ (no engine: --no-install-recommends keeps it out).
system-packages:
	@test -x $(CHROMIUM) && command -v docker-compose >/dev/null || { \
	  apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose; }

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
bench: install-dev peers-venv
	$(PY) -m bench all --quick

$(PEERS_VENV)/.installed: bench/peers_app/requirements.txt
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r bench/peers_app/requirements.txt
	touch $@

peers-venv: $(PEERS_VENV)/.installed

clean:
	rm -rf var test-artifacts .pytest_cache
