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

# Django's Tasks API is also tested on Django 6 (django.tasks instead of the
# django-tasks backport): a second, small virtualenv on Python 3.12 with the
# kit's requirements, Django 6.0 (the latest Django they accept:
# django-celery-beat 2.9 requires Django<6.1) and pytest, running only the
# Django-tasks tests.
PYTHON_DJANGO6 ?= $(or $(lastword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python)),python3.12)
DJANGO6 := Django==6.0.10
VENV_DJANGO6 := .venv-django6
DJANGO_TASKS_TESTS := tests/jobs/test_django_tasks.py tests/jobs/test_django_tasks_on_rabbitmq.py

.PHONY: run test test-django6 lint format bench peers-venv install install-dev system-packages clean

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
	$(MAKE) test-django6

$(VENV_DJANGO6)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON_DJANGO6) -m venv $(VENV_DJANGO6)
	grep -v '^Django==' requirements.txt > $(VENV_DJANGO6)/requirements.txt
	$(VENV_DJANGO6)/bin/python -m pip install --quiet --disable-pip-version-check $(DJANGO6) \
	  -r $(VENV_DJANGO6)/requirements.txt $$(grep -E '^pytest(-django)?==' requirements-dev.txt)
	touch $@

test-django6: $(VENV_DJANGO6)/.installed
	$(VENV_DJANGO6)/bin/python -m pytest $(DJANGO_TASKS_TESTS)

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
