"""Secrets a production process refuses: placeholders and short values.

A deployment copied from compose/.env.example with a "change-me" left in
would run with a secret anyone can read in this repository. The production
settings call `require_production_secrets()` at import, so every process
(web, workers, beat, Flower, `manage.py` commands) stops at start-up with a
message naming the variable. compose/start/require-secret applies the same
rules to the containers that do not run Django (RabbitMQ, PostgreSQL,
Prometheus); tests/ops/test_secrets.py keeps the two in agreement.
"""

import os
import re
from collections.abc import Mapping
from urllib.parse import unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

# What the examples and documentation use in place of a secret.
PLACEHOLDER = re.compile(r"change-?me|replace-?me|placeholder", re.IGNORECASE)
# Django's own deployment check wants 50 characters for SECRET_KEY.
SECRET_KEY_MIN_LENGTH = 50
# Passwords and tokens: 16 characters of `openssl rand -hex` are 64 bits.
PASSWORD_MIN_LENGTH = 16
HOW = "generate one with `openssl rand -hex 32`"


def secret_problem(value: str, min_length: int) -> str | None:
    """Why `value` is not a secret, or None if it is acceptable."""
    if PLACEHOLDER.search(value):
        return "is still a placeholder"
    if len(value) < min_length:
        return f"is too short ({len(value)} characters, at least {min_length})"
    return None


def require_secret(name: str, value: str, min_length: int = PASSWORD_MIN_LENGTH) -> None:
    problem = secret_problem(value, min_length)
    if problem:
        raise ImproperlyConfigured(f"{name} {problem}: {HOW}.")


def require_url_password(name: str, url: str) -> None:
    """The password inside a URL, if it has one (a socket with peer
    authentication needs none)."""
    password = urlparse(url).password
    if password is not None:
        require_secret(f"The password in {name}", unquote(password))


def require_production_secrets(environ: Mapping[str, str] = os.environ) -> None:
    """Every secret a production process may be given. The ones a process
    does not need are absent from its environment (compose gives each
    service only its own) and are then not checked here; the programs that
    need them refuse to start without them."""
    require_secret("DJANGO_SECRET_KEY", environ.get("DJANGO_SECRET_KEY", ""), SECRET_KEY_MIN_LENGTH)
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "FLOWER_BROKER_API"):
        if environ.get(name):
            require_url_password(name, environ[name])
    if environ.get("METRICS_TOKEN"):
        require_secret("METRICS_TOKEN", environ["METRICS_TOKEN"])
    for pair in filter(None, (item.strip() for item in environ.get("FLOWER_BASIC_AUTH", "").split(","))):
        user, _, password = pair.partition(":")
        require_secret(f"The password of {user or '?'} in FLOWER_BASIC_AUTH", password)
