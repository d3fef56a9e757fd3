"""Bare Celery, the limit: the same broker and worker command as the kit, but
Celery's own defaults where the kit chose otherwise, and no results at all."""

from bench.settings_kit import *  # noqa: F403

CELERY_IMPORTS = ["bench.tasks"]

CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_EXTENDED = False
CELERY_TASK_TRACK_STARTED = False

# Celery's defaults: acknowledge on receipt (before the task runs), prefetch
# 4 messages per child, publish without confirms.
CELERY_TASK_ACKS_LATE = False
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
CELERY_BROKER_TRANSPORT_OPTIONS = {}

# A plain queue of its own (Celery's default topology: a direct exchange named
# after the queue, no priorities), so no other variant's messages are in it.
CELERY_TASK_QUEUES = None
CELERY_TASK_DEFAULT_QUEUE = "bench-bare"
CELERY_TASK_DEFAULT_EXCHANGE = None
CELERY_TASK_DEFAULT_ROUTING_KEY = None
CELERY_TASK_DEFAULT_PRIORITY = None
CELERY_TASK_QUEUE_MAX_PRIORITY = None
