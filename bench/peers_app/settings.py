"""A minimal Django project for the peers that live in Django
(Procrastinate's Django integration, django-tasks' database backend,
django-q2's ORM broker): their documented settings, nothing of the kit's.

Read from the environment, so each worker process and the driver agree:
BENCH_PEERS_DATABASE_URL (a database of its own, never the tests' or the
kit's bench database) and BENCH_PEERS_CONN_MAX_AGE (Django's default 0, or
600 for connections kept between tasks).
"""

import os
from urllib.parse import urlparse

_database = urlparse(os.environ.get("BENCH_PEERS_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kit_bench_peers"))

SECRET_KEY = "bench-peers-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "procrastinate.contrib.django",
    "django_tasks",
    "django_tasks_db",
    "django_q",
    "bench.peers_app",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _database.path.lstrip("/"),
        "USER": _database.username or "postgres",
        "PASSWORD": _database.password or "",
        "HOST": _database.hostname or "127.0.0.1",
        "PORT": _database.port or 5432,
        # 0 is Django's default: a connection per request, or per task for
        # the workers that follow Django's request cycle.
        "CONN_MAX_AGE": int(os.environ.get("BENCH_PEERS_CONN_MAX_AGE", "0")),
    }
}

# django-tasks with its database backend (django-tasks-db), its defaults.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

# django-q2 on its ORM broker: 2 workers, its defaults otherwise, except
# save_limit: by default it keeps the last 250 successful tasks only (and
# deletes the oldest on every save past that), and the benchmark counts
# every task in django-q2's own table; 0 keeps them all (and skips that
# delete, which only helps django-q2); and a timeout under the retry delay
# (60 s), which django-q2 warns about when left unset.
Q_CLUSTER = {
    "name": "bench-peers",
    "orm": "default",
    "workers": 2,
    "save_limit": 0,
    "timeout": 30,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
