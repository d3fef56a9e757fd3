"""Settings shared by every environment. Everything that differs between
development and production comes from the environment (config/env.py)."""

import os
from pathlib import Path

import dj_database_url
import django
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_list, env_str
from jobs.queues import MAX_PRIORITY, PRIORITY_VALUE, Priority, Queue, QueueType, lane_name, task_queues

BASE_DIR = Path(__file__).resolve().parent.parent.parent
# Runtime state of the embedded default (SQLite file, filesystem broker,
# Flower and beat state) lives here, never inside the source tree proper.
VAR_DIR = Path(env_str("KIT_VAR_DIR", str(BASE_DIR / "var")))


def _owner_only(directory: Path) -> Path:
    """var/ holds the embedded default's database (sessions, API tokens),
    broker messages, reports and Flower's login: 0700, so nobody else on
    the machine reads anything in it whatever each file's mode (`manage.py
    up` also runs with umask 077). A var/ made before this is tightened."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = directory.stat()
    if status.st_uid == os.getuid() and status.st_mode & 0o077:
        directory.chmod(0o700)
    return directory


VAR_DIR = _owner_only(VAR_DIR)

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", [])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_results",
    "django_celery_beat",
    "jobs",
    "ops",
    "media_tasks",
    "mail_tasks",
    "reports",
]
if django.VERSION < (6, 0):
    # Django's Tasks API before Django 6: the django-tasks backport (its
    # system checks and signal receivers).
    INSTALLED_APPS.append("django_tasks")

# Django's Tasks API (`@task`, `.enqueue()`): run as kit jobs, on the same
# queues, workers and guarantees (jobs/django_tasks.py; README, "Django's
# Tasks API").
TASKS = {"default": {"BACKEND": "jobs.django_tasks.KitBackend"}}

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database(url: str) -> dict:
    # Workers reuse their connection across tasks (CONN_MAX_AGE) instead of
    # opening one per task, which is what makes the common
    # django-celery-results setup slow; health checks drop dead ones.
    config = dj_database_url.parse(
        url,
        conn_max_age=env_int("DB_CONN_MAX_AGE", 600),
        conn_health_checks=True,
    )
    if config["ENGINE"] == "django.db.backends.postgresql":
        # Django turns prepared statements off (for connection poolers), and
        # its ORM binds parameters on the client, so every query is parsed
        # and planned anew. Here queries bind on the server (Django's own
        # server_side_binding) and psycopg prepares a statement on its 5th
        # run on a connection (its own default): the workers' tracking
        # statements (jobs.tracking), run thousands of times a second, cost
        # PostgreSQL about half the CPU prepared, and the API's per-request
        # queries (the token, the permission check) skip their planning,
        # which was about a third of their time (BENCHMARKS.md, latency).
        # Behind PgBouncer in transaction mode, either give PgBouncer (1.21
        # or later) max_prepared_statements or set DB_PREPARED_STATEMENTS=false
        # (client-side binding, nothing prepared, as Django's default).
        prepared = env_bool("DB_PREPARED_STATEMENTS", True)
        config.setdefault("OPTIONS", {}).update(prepare_threshold=5 if prepared else None, server_side_binding=prepared)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        Path(config["NAME"]).parent.mkdir(parents=True, exist_ok=True)
        # Several processes (web, workers, beat) write to one file: WAL lets
        # readers run beside the writer, IMMEDIATE takes the write lock at
        # BEGIN so two writers queue instead of failing mid-transaction.
        config["OPTIONS"] = {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    return config


DATABASES = {"default": _database(env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Django's ModelBackend, asking a user's own permissions before their
# groups' (one query instead of two when the permission is the user's own).
AUTHENTICATION_BACKENDS = ["jobs.auth_backends.ModelBackend"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("DJANGO_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env_str("DJANGO_MEDIA_ROOT", str(VAR_DIR / "media")))

# The JSON API: staff sessions (the admin's login) or per-user tokens.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # JSON over DATA_UPLOAD_MAX_MEMORY_SIZE is a 413 that names the limit.
    "DEFAULT_PARSER_CLASSES": [
        "jobs.api_parsing.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "jobs.api_parsing.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
# The OpenAPI schema (/api/schema/) and its docs page (/api/docs/), whose
# Swagger UI files come from drf-spectacular-sidecar, served by the kit.
SPECTACULAR_SETTINGS = {
    "TITLE": "Background jobs kit API",
    "DESCRIPTION": "Enqueue registered tasks, follow, retry and cancel jobs, and the image, mail and report APIs.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Two request fields named "format" with different choices (an image's
    # output, a report's file): the image's enum named for what it is.
    "ENUM_NAME_OVERRIDES": {"ImageFormatEnum": "media_tasks.conf.OUTPUT_FORMATS"},
}
# A JSON body for enqueueing is small; anything bigger is refused with 413
# before it is parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DJANGO_DATA_UPLOAD_MAX_MEMORY_SIZE", 1024 * 1024)

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
# The periodic housekeeping tasks' per-run lines (beat's "Sending due task",
# a worker's "received" and "succeeded" for the outbox relay every 10 s) are
# noise on a developer's terminal (make run) but a heartbeat an operator may
# grep for in production: kept off the console in DEBUG only, by default.
LOG_QUIET_HOUSEKEEPING = env_bool("LOG_QUIET_HOUSEKEEPING", DEBUG)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"},
    },
    # What each filter keeps off the console, and why: jobs/log_filters.py.
    "filters": {
        "quiet_housekeeping": {"()": "jobs.log_filters.QuietHousekeeping"},
        "expected_failure_as_warning": {"()": "jobs.log_filters.ExpectedFailureAsWarning"},
        "quiet_flower_start": {"()": "jobs.log_filters.QuietFlowerStart"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": [
                *(["quiet_housekeeping"] if LOG_QUIET_HOUSEKEEPING else []),
                "expected_failure_as_warning",
                "quiet_flower_start",
            ],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's default config gives "django" a console handler of its
        # own; without this every Django message would print twice.
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        # SQL at DEBUG is too loud even when debugging the kit.
        "django.db.backends": {"level": "INFO"},
        # aiosmtpd (the local SMTP sink) logs five lines per connection.
        "mail.log": {"level": "WARNING"},
    },
}

# ---------------------------------------------------------------------------
# Celery. Read by config/celery_app.py with the CELERY_ namespace.
# ---------------------------------------------------------------------------

# Embedded default: kombu's filesystem transport, no server to install.
# Production: amqp://user:password@rabbitmq:5672/vhost
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
BROKER_DIR = VAR_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's filesystem transport with quick pickup, priorities and
    # redelivery of what a dead consumer held (jobs/filesystem_broker.py says
    # what it changes and why). The URL's scheme would pick kombu's own.
    CELERY_BROKER_TRANSPORT = "jobs.filesystem_broker:Transport"
    # One folder both ways: producers and consumers are separate processes.
    # kombu does not create them itself.
    for folder in ("queue", "control", "claimed", "staging"):
        (BROKER_DIR / folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        # Messages read and not yet acknowledged, per consuming process; and
        # messages being written, renamed into the queue when whole.
        "claim_folder": str(BROKER_DIR / "claimed"),
        "staging_folder": str(BROKER_DIR / "staging"),
        "store_processed": False,
    }
else:
    # Publisher confirms: apply_async returns only once RabbitMQ has the
    # message, so a job marked QUEUED is really on the broker.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
# Keep retrying the broker at start-up instead of crashing the worker.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Results go to django-celery-results' TaskResult table through a subclass of
# its database backend ("django-db") that writes each state in one upsert and
# moves the Job row in the same transaction (jobs/backend.py).
CELERY_RESULT_BACKEND = "jobs.backend:TrackedDatabaseBackend"
# Task name, worker and argument reprs in TaskResult: same statement, free.
CELERY_RESULT_EXTENDED = True
# A state the database could not take (it is restarting) is written again
# after a backoff (full jitter, 10 ms doubling up to 10 s): about a minute in
# all before the worker gives up on it (jobs.backend says which errors; a job
# whose start was deferred to that write is then handed back, jobs.starts).
CELERY_RESULT_BACKEND_ALWAYS_RETRY = True
CELERY_RESULT_BACKEND_MAX_RETRIES = env_int("CELERY_RESULT_BACKEND_MAX_RETRIES", 20)
# Celery's built-in cleanup deletes all expired results in one statement;
# `manage.py prune_jobs` does it in batches instead (scheduled below).
CELERY_RESULT_EXPIRES = None
# STARTED is written on the Job row by the task itself (one UPDATE that also
# counts deliveries); a second write to TaskResult would buy nothing.
CELERY_TASK_TRACK_STARTED = False

# JSON only: a pickle message published to the queue is refused, never run.
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]

# At-least-once: the message is acknowledged after the task finishes, and
# requeued if the worker child dies mid-task (SIGKILL, OOM). Tasks are
# idempotent and jobs.base_task bounds redeliveries (DEAD).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# With late acks a worker holds one unstarted message per child, so a
# high-priority job is not stuck behind a held backlog; while its jobs are
# short it holds a few more (jobs.worker_prefetch). Set in the environment
# (or --prefetch-multiplier), the multiplier is fixed instead.
JOBS_PREFETCH_MULTIPLIER_SET = "CELERY_WORKER_PREFETCH_MULTIPLIER" in os.environ
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("CELERY_WORKER_PREFETCH_MULTIPLIER", 1)
# Celery closes the worker's database connections around every task unless
# this is set (undocumented: upstream/celery.py checks it is still read);
# jobs/signals.py applies CONN_MAX_AGE and health checks instead.
CELERY_DB_REUSE_MAX = 1_000_000
# On a lost broker connection, unacked messages go back to the queue anyway;
# stopping the running copies avoids running them twice.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
# A channel error (RabbitMQ closing the channel, e.g. PRECONDITION_FAILED when
# a message is held past consumer_timeout) reconnects like a lost connection,
# instead of Celery's default: "Unrecoverable error" and a worker that exits
# and stays down unless something restarts it. The unacked messages go back
# to the queue either way.
CELERY_BROKER_CHANNEL_ERROR_RETRY = True
# SIGTERM stays warm (jobs finish within their hard limit); a cold stop
# (SIGQUIT, or REMAP_SIGTERM=SIGQUIT) gives them this long, then hands them back
# unacknowledged. Idle workers stop at once (README, Guarantees).
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = env_int("CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT", 10)
CELERY_WORKER_ENABLE_SOFT_SHUTDOWN_ON_IDLE = False

# classic (default): priority queues on one RabbitMQ node. quorum: replicated
# queues for a RabbitMQ cluster, one per priority lane (jobs.queues.QueueType
# says why the default is classic; README, "Growing beyond one machine").
try:
    KIT_QUEUE_TYPE = QueueType(env_str("KIT_QUEUE_TYPE", QueueType.CLASSIC.value).strip().lower())
except ValueError:
    raise ImproperlyConfigured(
        f"KIT_QUEUE_TYPE={env_str('KIT_QUEUE_TYPE')!r} is not a queue type (use classic or quorum)."
    ) from None
CELERY_TASK_QUEUES = task_queues(KIT_QUEUE_TYPE)
_DEFAULT_QUEUE = next(
    queue for queue in CELERY_TASK_QUEUES if queue.name == lane_name(Queue.DEFAULT, Priority.MEDIUM, KIT_QUEUE_TYPE)
)
CELERY_TASK_DEFAULT_QUEUE = _DEFAULT_QUEUE.name
CELERY_TASK_DEFAULT_EXCHANGE = _DEFAULT_QUEUE.exchange.name
CELERY_TASK_DEFAULT_EXCHANGE_TYPE = _DEFAULT_QUEUE.exchange.type
CELERY_TASK_DEFAULT_ROUTING_KEY = _DEFAULT_QUEUE.routing_key
CELERY_TASK_DEFAULT_PRIORITY = PRIORITY_VALUE[Priority.MEDIUM]
# The worker's consumer declares every kit queue before Celery's native
# delayed delivery binds them (jobs/worker_consumer.py says why).
CELERY_WORKER_CONSUMER = "jobs.worker_consumer:KitConsumer"
# Celery adds x-max-priority to every queue declared without one; quorum
# queues refuse it (406 PRECONDITION_FAILED), so only classic mode sets it.
CELERY_TASK_QUEUE_MAX_PRIORITY = MAX_PRIORITY if KIT_QUEUE_TYPE is QueueType.CLASSIC else None

# Events feed Flower's live view of workers and tasks.
CELERY_WORKER_SEND_TASK_EVENTS = env_bool("CELERY_WORKER_SEND_TASK_EVENTS", True)
CELERY_TASK_SEND_SENT_EVENT = CELERY_WORKER_SEND_TASK_EVENTS
# Keep Django's logging configuration instead of Celery's.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = TIME_ZONE

# Periodic tasks are editable in the admin (django-celery-beat); the entries
# below are the kit's own and are synced into that table at beat start.
# They are plain Celery tasks, not jobs, so their queue is named here: in
# quorum mode the queue of their declaration (e.g. "default") is not a
# broker queue, its lanes are, and Celery would otherwise create a classic
# "default" queue that no worker consumes.
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# A standby beat asks for the schedule lock this often, and the running one
# checks it still holds it (jobs/beat_lock.py).
JOBS_BEAT_LOCK_POLL_SECONDS = env_int("JOBS_BEAT_LOCK_POLL_SECONDS", 5)
CELERY_BEAT_SCHEDULE = {
    "jobs-relay-outbox": {
        "task": "jobs.relay_outbox",
        "schedule": env_int("JOBS_RELAY_INTERVAL_SECONDS", 10),
        "options": {
            "priority": PRIORITY_VALUE[Priority.HIGH],
            "queue": lane_name(Queue.DEFAULT, Priority.HIGH, KIT_QUEUE_TYPE),
        },
    },
    "jobs-reap-lost": {
        "task": "jobs.reap_lost",
        "schedule": 300,
        "options": {
            "priority": PRIORITY_VALUE[Priority.LOW],
            "queue": lane_name(Queue.DEFAULT, Priority.LOW, KIT_QUEUE_TYPE),
        },
    },
    # Marks DEAD the jobs whose messages RabbitMQ dead-lettered
    # (jobs.maintenance.jobs_mark_dead_lettered): one passive declare when
    # there are none.
    "jobs-mark-dead-lettered": {
        "task": "jobs.mark_dead_lettered",
        "schedule": 60,
        "options": {
            "priority": PRIORITY_VALUE[Priority.LOW],
            "queue": lane_name(Queue.DEFAULT, Priority.LOW, KIT_QUEUE_TYPE),
        },
    },
    "jobs-prune": {
        "task": "jobs.prune",
        "schedule": 3600,
        "options": {
            "priority": PRIORITY_VALUE[Priority.LOW],
            "queue": lane_name(Queue.DEFAULT, Priority.LOW, KIT_QUEUE_TYPE),
        },
    },
    # Deletes report files past REPORTS_FILE_TTL_HOURS (reports/tasks.py).
    "reports-delete-expired": {
        "task": "reports.delete_expired",
        "schedule": 3600,
        "options": {
            "priority": PRIORITY_VALUE[Priority.LOW],
            "queue": lane_name(Queue.REPORTS, Priority.LOW, KIT_QUEUE_TYPE),
        },
    },
}

# ---------------------------------------------------------------------------
# The job core (jobs/). Defaults an operator may tune per deployment.
# ---------------------------------------------------------------------------
# A PENDING job older than this is published by the relay; younger ones are
# left to their own on-commit publish.
JOBS_RELAY_GRACE_SECONDS = env_int("JOBS_RELAY_GRACE_SECONDS", 10)
# A job due further ahead than this waits in the database and is published
# by the relay when it comes near, never parked on the broker for long
# (RabbitMQ's consumer_timeout; jobs.publishing._held_back).
JOBS_BROKER_ETA_HORIZON_SECONDS = env_int("JOBS_BROKER_ETA_HORIZON_SECONDS", 120)
# Status changes after enqueue (QUEUED, and what workers write) wait for
# PostgreSQL's WAL flush only if this is true (jobs.tracking.
# relaxed_durability says what is at stake).
JOBS_DURABLE_TRACKING = env_bool("JOBS_DURABLE_TRACKING", False)
# A worker writes a job's start with its end, in one statement, unless the job
# runs longer than this (then a thread writes STARTED as it passes), reports
# progress, or is a redelivery (jobs.starts says why and what it costs). 0:
# every start is written as the job begins, one more statement per job.
JOBS_START_RECORD_DELAY_MS = env_int("JOBS_START_RECORD_DELAY_MS", 500)
# A prefork worker's main process writes the ends of successful jobs several
# to a statement, and acknowledges their messages after (jobs.end_batches);
# false: each worker child writes its own, one statement per job.
JOBS_BATCHED_ENDS = env_bool("JOBS_BATCHED_ENDS", True)
# A job STARTED longer than its queue's hard time limit plus this is LOST.
JOBS_LOST_GRACE_SECONDS = env_int("JOBS_LOST_GRACE_SECONDS", 300)
# Finished jobs and their results are deleted after this many days.
JOBS_RETENTION_DAYS = env_int("JOBS_RETENTION_DAYS", 30)

# ---------------------------------------------------------------------------
# mail_tasks: outbound email over SMTP (mail_tasks/). Begin.
# ---------------------------------------------------------------------------
EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
# The default is the local sink `manage.py smtp_sink` listens on, so a first
# run never sends real mail; a deployment sets its relay here.
EMAIL_HOST = env_str("EMAIL_HOST", "127.0.0.1")
EMAIL_PORT = env_int("EMAIL_PORT", 1025)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
# Django's default is no timeout: a relay that stops answering would hold a
# worker slot until the hard time limit kills it. 30 s is longer than any
# healthy relay needs, and well inside the email queue's soft limit.
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "kit@localhost")
# Recipients per campaign batch: one job and one SMTP connection each. Small
# enough that a batch ends well inside the queue's time limit, large enough
# that connection set-up is noise.
MAIL_BATCH_SIZE = env_int("MAIL_BATCH_SIZE", 500)
# Messages per second across every worker, and per recipient domain; 0 is no
# limit. Relays and big receivers (Gmail, Outlook) throttle senders that go
# faster, so set these to what your provider allows.
MAIL_RATE_PER_SECOND = env_int("MAIL_RATE_PER_SECOND", 0)
MAIL_RATE_PER_DOMAIN_PER_SECOND = env_int("MAIL_RATE_PER_DOMAIN_PER_SECOND", 0)
# First delay before a transient failure (4xx, refused, timeout) is retried;
# it doubles per attempt with full jitter (jobs.queues.RetryPolicy). Relays
# answer 4xx when throttling or greylisting, which lasts minutes, not seconds.
MAIL_RETRY_BACKOFF_SECONDS = env_int("MAIL_RETRY_BACKOFF_SECONDS", 15)
MAIL_RETRY_MAX = env_int("MAIL_RETRY_MAX", 8)
# ---------------------------------------------------------------------------
# mail_tasks. End.
# ---------------------------------------------------------------------------

# ---------------------------------------------------------------------------
# media_tasks: images with Pillow (media_tasks/). Begin.
# ---------------------------------------------------------------------------
# Made for every image from one decode. Width only: that wide, height by
# aspect ratio; width and height: fit inside, or fill and crop with "crop".
# Never enlarged. Formats: JPEG or WEBP; quality 1-95.
MEDIA_TASKS_RENDITIONS = {
    "thumb": {"width": 150, "height": 150, "crop": True, "format": "JPEG", "quality": 80, "watermark": False},
    "medium": {"width": 800, "format": "JPEG", "quality": 82},
    "large": {"width": 1600, "format": "JPEG", "quality": 85},
}
# Formats accepted, read from the content. TIFF stays for scanners and
# photographers; libtiff's history is why the pixel limit comes first.
MEDIA_TASKS_ALLOWED_FORMATS = env_list("MEDIA_TASKS_ALLOWED_FORMATS", ["JPEG", "PNG", "WEBP", "GIF", "TIFF"])
# Larger images are refused from their header, before decoding: Pillow's own
# default (a 24-bit image of 256 MiB), above a 50 MP phone photo.
MEDIA_TASKS_MAX_PIXELS = env_int("MEDIA_TASKS_MAX_PIXELS", 89_478_485)
# Refused by the web layer with 413 before the body is stored.
MEDIA_TASKS_MAX_UPLOAD_BYTES = env_int("MEDIA_TASKS_MAX_UPLOAD_BYTES", 25 * 1024 * 1024)
MEDIA_TASKS_MAX_BATCH_FILES = env_int("MEDIA_TASKS_MAX_BATCH_FILES", 50)
# A key of STORAGES; "default" is MEDIA_ROOT on the local file system.
MEDIA_TASKS_STORAGE = env_str("MEDIA_TASKS_STORAGE", "default")
# Originals and renditions are served only by media_tasks.api.
# ImageFileDownload, after its access check. Set to nginx's internal
# location (compose: /protected-media/) to have nginx send the file
# (X-Accel-Redirect); empty: Django streams it.
MEDIA_TASKS_X_ACCEL_REDIRECT_PREFIX = env_str("MEDIA_TASKS_X_ACCEL_REDIRECT_PREFIX", "")
# What transparent pixels become in a JPEG.
MEDIA_TASKS_BACKGROUND = env_str("MEDIA_TASKS_BACKGROUND", "#ffffff")
# Watermark images a request may name: {"name": "/path/to/logo.png"}.
MEDIA_TASKS_WATERMARKS: dict[str, str] = {}
# ---------------------------------------------------------------------------
# media_tasks. End.
# ---------------------------------------------------------------------------

# ---------------------------------------------------------------------------
# reports: CSV, XLSX and PDF reports (reports/). Begin.
# ---------------------------------------------------------------------------
# Report files are private (downloads check who asks), so they live outside
# MEDIA_ROOT, which `make run` and many web servers serve to anyone.
REPORTS_ROOT = Path(env_str("REPORTS_ROOT", str(VAR_DIR / "reports")))
# A key of STORAGES to keep them elsewhere (a private bucket); empty: the
# local REPORTS_ROOT.
REPORTS_STORAGE = env_str("REPORTS_STORAGE", "")
# Files are deleted this long after they are made; the run stays, expired.
REPORTS_FILE_TTL_HOURS = env_int("REPORTS_FILE_TTL_HOURS", 7 * 24)
# Rows per fetch from a server-side cursor (PostgreSQL): round trips become
# noise, and a chunk of wide rows stays a few megabytes.
REPORTS_CHUNK_SIZE = env_int("REPORTS_CHUNK_SIZE", 2000)
# CSV from a QuerySet on PostgreSQL is written by COPY (reports/writers/
# pg_copy.py), several times faster; false writes it in Python, for a
# connection pooler or proxy that does not pass COPY through.
REPORTS_CSV_WITH_COPY = env_bool("REPORTS_CSV_WITH_COPY", True)
# Rows in a PDF's table (reportlab lays a document out in memory); its
# charts still sum every row, and CSV and XLSX have no limit.
REPORTS_PDF_MAX_ROWS = env_int("REPORTS_PDF_MAX_ROWS", 5000)
# Larger files are linked from the email instead of attached: base64 adds a
# third, and relays refuse messages over 10-25 MB.
REPORTS_EMAIL_MAX_ATTACHMENT_BYTES = env_int("REPORTS_EMAIL_MAX_ATTACHMENT_BYTES", 5 * 1024 * 1024)
# The site's public address, for the download links in emails.
REPORTS_SITE_URL = env_str("REPORTS_SITE_URL", "http://127.0.0.1:8000")
# ---------------------------------------------------------------------------
# reports. End.
# ---------------------------------------------------------------------------

# ---------------------------------------------------------------------------
# ops: metrics, health check and the admin dashboard (ops/). Begin.
# ---------------------------------------------------------------------------
# Bearer token Prometheus sends to /metrics; empty: staff sessions only (and
# loopback clients while DEBUG is on). See ops/views.py.
OPS_METRICS_TOKEN = env_str("METRICS_TOKEN", "")
# Finished-job figures look at jobs created at most this long before they
# finished: it bounds each query by the created_at index (ops/stats.py).
OPS_METRICS_LOOKBACK_HOURS = env_int("OPS_METRICS_LOOKBACK_HOURS", 24)
# The window of kit_job_error_ratio.
OPS_METRICS_RECENT_SECONDS = env_int("OPS_METRICS_RECENT_SECONDS", 300)
# A broadcast to the workers (ping, stats) waits this long for replies...
OPS_INSPECT_TIMEOUT_SECONDS = env_int("OPS_INSPECT_TIMEOUT_MS", 1000) / 1000
# ...so its answer is reused this long; queue depths are cheap, but a
# dashboard or two Prometheus servers should not open a connection each.
OPS_WORKERS_CACHE_SECONDS = env_int("OPS_WORKERS_CACHE_SECONDS", 15)
OPS_BROKER_CACHE_SECONDS = env_int("OPS_BROKER_CACHE_SECONDS", 5)
# Alert thresholds. /metrics publishes them as kit_alert_threshold{name} and
# the rules (compose/prometheus/alerts.yml) compare with that series, so a
# threshold is changed here, per deployment, without editing the rules.
OPS_ALERT_THRESHOLDS = {
    # The relay publishes PENDING jobs every JOBS_RELAY_INTERVAL_SECONDS:
    # five minutes of PENDING means beat or the broker is stuck.
    "pending_age_seconds": env_int("OPS_ALERT_PENDING_AGE_SECONDS", 300),
    # A job waiting for a worker this long: too few workers, or none.
    "queued_age_seconds": env_int("OPS_ALERT_QUEUED_AGE_SECONDS", 900),
    # Failed, dead or lost over finished jobs of a queue, in ten minutes.
    "error_ratio": env_int("OPS_ALERT_ERROR_PERCENT", 10) / 100,
    # A worker's main process growing faster than this for two hours leaks.
    "worker_memory_growth_bytes_per_hour": env_int("OPS_ALERT_WORKER_MEMORY_GROWTH_MIB_PER_HOUR", 50) * 1024 * 1024,
}
# Where people open Flower: each job page links to its task there (empty: no link).
FLOWER_URL = env_str("FLOWER_URL", "http://localhost:5555")
# ---------------------------------------------------------------------------
# ops. End.
# ---------------------------------------------------------------------------
