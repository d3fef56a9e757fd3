"""Queue names, priorities, time limits and worker groups, defined once.

Task routing, the worker command, `manage.py up`, the settings and (later)
the compose files and metrics all read from here, so a queue is renamed or
re-limited in one place.
"""

from dataclasses import dataclass
from enum import StrEnum

from kombu import Exchange
from kombu import Queue as KombuQueue


class Queue(StrEnum):
    DEFAULT = "default"
    IMAGES = "images"
    EMAIL = "email"
    REPORTS = "reports"


class Priority(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class QueueType(StrEnum):
    """How the kit's queues are declared on RabbitMQ (KIT_QUEUE_TYPE).

    classic: one priority queue per kit queue, on one node (the default: a
    single RabbitMQ gives nothing to replicate to, and classic priority
    queues order high before low exactly).
    quorum: replicated Raft queues for a cluster of three or more nodes,
    which survive the loss of a node; they have no real priorities (none
    on RabbitMQ 3.x, two non-strict levels on 4.x), so each kit queue
    becomes one queue per priority lane that its workers consume together
    (see quorum_queues)."""

    CLASSIC = "classic"
    QUORUM = "quorum"


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

# While a worker's jobs are short, it holds SHORT_JOB_PREFETCH_MULTIPLIER
# messages per child instead of one (jobs.worker_prefetch): a child then
# takes its next job the moment it finishes one, instead of after its
# acknowledgement has reached RabbitMQ and the next delivery come back, and
# the acknowledgements the main process holds for a batch of ends
# (jobs.end_batches) do not leave the children without work. What it could
# cost is priority, as RabbitMQ orders only what it still has: the worker
# starts the messages it holds highest priority first (jobs.worker_priority),
# so a high job waits for a child to come free, not for the held ones. Short
# means each of the last SHORT_JOBS_BEFORE_HOLDING jobs ran within
# SHORT_JOB_SECONDS, so what one worker holds is under a second of work that
# another, idle, worker cannot take; the first longer job puts the worker
# back to one message per child. Eight rather than four: 1,263 against 1,168
# jobs/s, durably 1,431 against 975 (BENCHMARKS.md, "Levers tried").
SHORT_JOB_SECONDS = 0.1
SHORT_JOBS_BEFORE_HOLDING = 20
SHORT_JOB_PREFETCH_MULTIPLIER = 8

# A worker's main process writes the ends of successful jobs several at a
# time (jobs.end_batches): at most this many in one statement, and a held
# acknowledgement waits at most this long while other jobs are running.
END_BATCH_MAX_JOBS = 16
END_BATCH_WAIT_SECONDS = 0.002

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


# ---------------------------------------------------------------------------
# Broker topology: every queue, exchange and argument the kit declares, for
# both queue types. Celery's settings, the worker command, the metrics, the
# compose definitions and the tests all read them from here.
# ---------------------------------------------------------------------------

# Classic mode. A direct exchange, as before quorum mode existed: an existing
# deployment keeps its declarations byte for byte.
CLASSIC_EXCHANGE = Exchange("kit", type="direct")
# Quorum mode has names of its own, so a vhost can hold both while traffic
# moves (a queue's type cannot change in place, nor an exchange's). The
# exchange is a topic exchange because Celery's native delayed delivery,
# which carries countdowns and retry backoffs on quorum queues, forwards
# delayed messages to it by the pattern "#.<routing key>" and does not
# support direct exchanges.
QUORUM_EXCHANGE = Exchange("kit.quorum", type="topic")
# Where RabbitMQ puts a message it gives up on (past the queue's delivery
# limit), so it stays findable; fanout, so the original routing key is kept.
DEAD_LETTER_EXCHANGE = Exchange("kit.dlx", type="fanout")
DEAD_LETTER_QUEUE_NAME: dict[QueueType, str] = {
    QueueType.CLASSIC: "kit.dead",
    QueueType.QUORUM: "kit.dead.quorum",
}
# A second queue on the same fanout exchange gets a copy of every
# dead-lettered message, for the kit alone: housekeeping
# (jobs.maintenance.jobs_mark_dead_lettered) takes each copy once, marks its
# Job DEAD and acknowledges it, so the dead-letter queue itself is never
# read by the kit. Reading that one without taking its messages would mean
# handing them back, which on RabbitMQ 4.0-4.2 counts against a quorum
# queue's default delivery limit of 20 (the messages would be dropped after
# 20 reads), and a bounded read of a queue handed back each time would see
# the same first messages on every run and never the ones behind them.
DEAD_LETTER_NOTICE_QUEUE_NAME: dict[QueueType, str] = {
    QueueType.CLASSIC: "kit.dead.jobs",
    QueueType.QUORUM: "kit.dead.jobs.quorum",
}
# The kit counts the starts of a job and marks it DEAD past MAX_DELIVERIES
# (jobs.tracking), with its Job row to show for it. RabbitMQ's count is
# coarser: every message handed back counts, including ones a worker had
# prefetched and never started when its connection to a dying node broke,
# so a failover can add deliveries that never ran. The quorum queue's own
# limit is the backstop for messages the kit cannot count (a worker that dies
# before the task starts), set well above MAX_DELIVERIES so that the kit
# decides first. RabbitMQ 4 defaults to 20 as well; 3.x has no default.
QUORUM_DELIVERY_LIMIT = 20
# Workers consume the lanes of a queue in this order; RabbitMQ itself serves
# each lane's consumer separately (see quorum_queues).
LANES = (Priority.HIGH, Priority.MEDIUM, Priority.LOW)


def lane_name(queue: Queue | str, priority: Priority | str, queue_type: QueueType) -> str:
    """The broker queue a job of this queue and priority is published to."""
    if queue_type is QueueType.CLASSIC:
        return Queue(queue).value
    return f"{Queue(queue).value}.{Priority(priority).value}"


def broker_queue_names(queues, queue_type: QueueType) -> list[str]:
    """What a worker for these kit queues consumes (`celery worker -Q`)."""
    return list(dict.fromkeys(lane_name(queue, lane, queue_type) for queue in queues for lane in LANES))


def quorum_queue_arguments() -> dict:
    """The declare arguments of every quorum lane, identical wherever it is
    declared (a mismatch is a 406 PRECONDITION_FAILED).

    No x-max-priority: quorum queues refuse it. Dead-lettering is
    at-least-once (RabbitMQ keeps the message until the dead-letter queue
    confirms it, instead of dropping it if that queue is unavailable), which
    RabbitMQ applies only with overflow reject-publish; with no length limit
    set that changes nothing else."""
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": QUORUM_DELIVERY_LIMIT,
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE.name,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def classic_queues() -> list[KombuQueue]:
    """One classic priority queue per kit queue (dead-lettering, where
    wanted, comes from a policy: compose/rabbitmq/definitions.json)."""
    return [
        KombuQueue(
            queue.value,
            CLASSIC_EXCHANGE,
            routing_key=queue.value,
            queue_arguments={"x-max-priority": MAX_PRIORITY},
        )
        for queue in Queue
    ]


def quorum_queues() -> list[KombuQueue]:
    """One durable quorum queue per kit queue and priority lane.

    A worker started with -Q default.high,default.medium,default.low holds
    one consumer per lane on one channel. On quorum queues Celery turns
    global QoS off (worker_detect_quorum_queues), so the prefetch limit
    (concurrency x 1) applies to each consumer on its own: however long the
    low lane's backlog, the high lane's consumer has free credit and its
    next message reaches the worker at once, where it waits only for the
    first free pool process (-O fair). Measured in
    tests/reliability/test_quorum_cluster_on_rabbitmq.py."""
    return [
        KombuQueue(
            lane_name(queue, lane, QueueType.QUORUM),
            QUORUM_EXCHANGE,
            routing_key=lane_name(queue, lane, QueueType.QUORUM),
            durable=True,
            queue_arguments=quorum_queue_arguments(),
        )
        for queue in Queue
        for lane in LANES
    ]


def task_queues(queue_type: QueueType) -> list[KombuQueue]:
    """CELERY_TASK_QUEUES for this queue type."""
    return quorum_queues() if queue_type is QueueType.QUORUM else classic_queues()


def _bound_to_dead_letter_exchange(name: str, queue_type: QueueType) -> KombuQueue:
    """A durable queue that receives every message the kit's queues
    dead-letter (the exchange fans out); replicated in quorum mode like the
    rest."""
    arguments = {"x-queue-type": "quorum"} if queue_type is QueueType.QUORUM else {}
    return KombuQueue(name, DEAD_LETTER_EXCHANGE, routing_key="", durable=True, queue_arguments=arguments)


def dead_letter_queue(queue_type: QueueType) -> KombuQueue:
    """The queue that keeps what RabbitMQ dead-letters. Not a task queue: no
    worker consumes it (a person looks at it, and its depth is in /metrics
    as kit_queue_messages)."""
    return _bound_to_dead_letter_exchange(DEAD_LETTER_QUEUE_NAME[queue_type], queue_type)


def dead_letter_notice_queue(queue_type: QueueType) -> KombuQueue:
    """The kit's copy of every dead-lettered message (see
    DEAD_LETTER_NOTICE_QUEUE_NAME), declared like the dead-letter queue."""
    return _bound_to_dead_letter_exchange(DEAD_LETTER_NOTICE_QUEUE_NAME[queue_type], queue_type)
