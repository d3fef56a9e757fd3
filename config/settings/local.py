"""Development: the embedded default (SQLite + filesystem broker) unless
DATABASE_URL / CELERY_BROKER_URL say otherwise."""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "insecure-local-development-key")
os.environ.setdefault("DJANGO_DEBUG", "true")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")

from .base import *  # noqa: F403
