"""The common default: bare Celery plus django-celery-results' stock
"django-db" backend, configured as most projects configure it."""

from bench.settings_bare import *  # noqa: F403
from bench.settings_bare import DATABASES

CELERY_RESULT_BACKEND = "django-db"
CELERY_TASK_IGNORE_RESULT = False
CELERY_RESULT_EXTENDED = True
# STARTED is stored as its own write (and sets TaskResult.date_started).
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_DEFAULT_QUEUE = "bench-common-default"

# Django's defaults: Celery's Django fixup closes the connection after every
# task, so each task opens a new one.
DATABASES = {"default": {**DATABASES["default"], "CONN_MAX_AGE": 0, "CONN_HEALTH_CHECKS": False}}
# Celery's own default: connections closed around every task.
CELERY_DB_REUSE_MAX = None
