"""The kit's delivery policy without its tracking: the same queues, late
acks, prefetch and time limits as bench.settings_kit, but bench.noop with no
result backend, so the throughput benchmark can tell what tracking costs
from what the delivery guarantees cost."""

from bench.settings_kit import *  # noqa: F403

CELERY_IMPORTS = ["bench.tasks"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
# The kit's request class in the worker, which holds more messages while the
# jobs are short (jobs.worker_prefetch), as the kit's own tasks do.
CELERY_TASK_ANNOTATIONS = {"bench.noop": {"Request": "jobs.worker_request:JobRequest"}}
