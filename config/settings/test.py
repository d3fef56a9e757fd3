"""Tests run on the real services: PostgreSQL and RabbitMQ on loopback.

tests/conftest.py gives each run its own RabbitMQ vhost; worker processes
started by tests read the same variables.
"""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-key")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,testserver")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kit")
os.environ.setdefault("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/kit-test")
os.environ.setdefault("CELERY_WORKER_SEND_TASK_EVENTS", "false")

from .base import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]  # noqa: F405

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
