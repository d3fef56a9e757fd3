"""Queue names, priorities, time limits and worker groups, defined once.

Task routing, the worker command, `manage.py up`, the settings and (later)
the compose files and metrics all read from here, so a queue is renamed or
re-limited in one place.
"""

from dataclasses import dataclass
from enum import StrEnum


class Queue(StrEnum):
    DEFAULT = "default"
    IMAGES = "images"
    EMAIL = "email"
    REPORTS = "reports"


class Priority(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


# RabbitMQ delivers higher numbers first. Classic queues are declared with
# x-max-priority = MAX_PRIORITY; a small range keeps RabbitMQ's per-priority
# sub-queues cheap (its docs advise under 10).
MAX_PRIORITY = 9
PRIORITY_VALUE: dict[Priority, int] = {
    Priority.HIGH: 9,
    Priority.MEDIUM: 5,
    Priority.LOW: 0,
}


@dataclass(frozen=True)
class TimeLimits:
    """Seconds. The soft limit raises SoftTimeLimitExceeded inside the task so
    it can clean up; the hard limit kills the worker child."""

    soft: int
    hard: int


# With late acknowledgement RabbitMQ closes the channel of a consumer that
# holds a message longer than its consumer_timeout (30 minutes by default), so
# every hard limit stays below that; a deployment that needs longer raises
# consumer_timeout first.
RABBITMQ_CONSUMER_TIMEOUT_SECONDS = 1800
QUEUE_TIME_LIMITS: dict[Queue, TimeLimits] = {
    Queue.DEFAULT: TimeLimits(soft=60, hard=90),
    Queue.EMAIL: TimeLimits(soft=120, hard=180),
    Queue.IMAGES: TimeLimits(soft=300, hard=360),
    Queue.REPORTS: TimeLimits(soft=1500, hard=1700),
}

# Workers are started per group, so slow report and image work cannot starve
# email and small jobs of worker slots.
WORKER_GROUPS: dict[str, tuple[Queue, ...]] = {
    "general": (Queue.DEFAULT, Queue.EMAIL),
    "heavy": (Queue.IMAGES, Queue.REPORTS),
}

# A message whose task started this many times without finishing (its worker
# died each time) is marked DEAD instead of being delivered again.
MAX_DELIVERIES = 3


@dataclass(frozen=True)
class RetryPolicy:
    """Automatic retries for declared transient errors: exponential backoff
    (1s, 2s, 4s, ... capped) with full jitter, so a burst of failures does not
    come back as a burst."""

    max_retries: int = 5
    backoff_seconds: int = 1
    backoff_max_seconds: int = 600
    jitter: bool = True


DEFAULT_RETRY_POLICY = RetryPolicy()

# Where RabbitMQ puts what a kit queue rejects or expires (compose/rabbitmq/
# definitions.json binds it to the kit.dlx exchange by policy). Anything in
# it is a message no worker will ever run: the metrics report its depth and
# an alert fires when it is above zero.
DEAD_LETTER_QUEUE = "kit.dead"
