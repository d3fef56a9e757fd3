"""What only the broker and the workers know: queue depths, and which
workers answer and what they use. Each answer is cached briefly per process.

A broadcast (`celery inspect`) waits its whole timeout for replies from
workers it cannot count in advance, so every uncached call costs that
timeout; the cache keeps a dashboard reload or a Prometheus scrape from
paying it each time, and the lock keeps concurrent requests from sending a
broadcast each.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import current_app
from django.conf import settings
from kombu.exceptions import OperationalError

from jobs.queues import DEAD_LETTER_QUEUE_NAME, Queue, broker_queue_names
from ops.worker_resources import COMMAND as RESOURCES_COMMAND

logger = logging.getLogger(__name__)


class TTLCache:
    """Values computed at most once per `seconds` (per key, per process)."""

    def __init__(self):
        self._values: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: str, seconds: float, compute: Callable[[], Any]) -> Any:
        with self._lock:
            cached = self._values.get(key)
            if cached is not None and time.monotonic() - cached[0] < seconds:
                return cached[1]
            value = compute()
            self._values[key] = (time.monotonic(), value)
            return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


cache = TTLCache()


@dataclass(frozen=True)
class QueueDepth:
    messages: int  # ready for a consumer (not the unacknowledged ones a worker holds)
    # Worker connections consuming it; None where the broker keeps no list of
    # consumers (the embedded filesystem broker answers 0 whoever consumes).
    consumers: int | None


def queue_depths() -> dict[str, QueueDepth] | None:
    """Per kit queue, from a passive declare (asks, creates nothing); None if
    the broker cannot be reached."""
    return cache.get("queue_depths", settings.OPS_BROKER_CACHE_SECONDS, _queue_depths)


def _queue_depths() -> dict[str, QueueDepth] | None:
    depths: dict[str, QueueDepth] = {}
    connection = current_app.connection_for_read(connect_timeout=2)
    try:
        # One quick retry: a scrape should fail fast, not hang on a dead broker.
        connection.ensure_connection(max_retries=1, interval_start=0, timeout=3)
        counted = counts_consumers(connection)
        queue_type = settings.KIT_QUEUE_TYPE
        # Each kit queue is one broker queue (classic) or its priority lanes
        # added up (quorum); the dead-letter queue is shown under its name.
        sources = {queue.value: broker_queue_names([queue], queue_type) for queue in Queue}
        sources[DEAD_LETTER_QUEUE_NAME[queue_type]] = [DEAD_LETTER_QUEUE_NAME[queue_type]]
        for label, names in sources.items():
            messages_total, consumers_most = 0, 0
            for name in names:
                # A passive declare of a queue that does not exist yet (no
                # worker or publisher declared it) closes its channel: one
                # channel per queue keeps that from failing the others.
                channel = connection.channel()
                try:
                    _, messages, consumers = channel.queue_declare(queue=name, passive=True)
                    # A worker holds one consumer per lane: count it once.
                    messages_total, consumers_most = messages_total + messages, max(consumers_most, consumers)
                except connection.channel_errors:
                    pass
                finally:
                    _close_quietly(channel, connection)
            # The embedded broker keeps no count of consumers: None, not 0.
            depths[label] = QueueDepth(messages=messages_total, consumers=consumers_most if counted else None)
    except broker_errors(connection):
        logger.warning("Queue depths unavailable: the broker did not answer.", exc_info=True)
        return None
    finally:
        connection.release()
    return depths


def dead_letter_messages() -> int | None:
    """Messages in the dead-letter queue; 0 where none is declared (the
    embedded default, a broker set up without compose's definitions), None
    if the broker cannot be reached."""
    return cache.get("dead_letter_messages", settings.OPS_BROKER_CACHE_SECONDS, _dead_letter_messages)


def _dead_letter_messages() -> int | None:
    connection = current_app.connection_for_read(connect_timeout=2)
    try:
        connection.ensure_connection(max_retries=1, interval_start=0, timeout=3)
        channel = connection.channel()
        try:
            _, messages, _ = channel.queue_declare(queue=DEAD_LETTER_QUEUE_NAME[settings.KIT_QUEUE_TYPE], passive=True)
            return messages
        except connection.channel_errors:
            return 0
        finally:
            _close_quietly(channel, connection)
    except broker_errors(connection):
        logger.warning("Dead-letter depth unavailable: the broker did not answer.", exc_info=True)
        return None
    finally:
        connection.release()


def counts_consumers(connection=None) -> bool:
    """Whether the broker knows who consumes a queue: RabbitMQ does; the
    embedded filesystem broker has no server to keep count."""
    if connection is None:
        with current_app.connection_for_read() as connection:
            return connection.transport.driver_type == "amqp"
    return connection.transport.driver_type == "amqp"


def broker_errors(connection) -> tuple[type[BaseException], ...]:
    """What a broker that is down or misbehaving raises: a page or a scrape
    reports it instead of failing."""
    return (OSError, OperationalError, *connection.connection_errors, *connection.channel_errors)


def _close_quietly(channel, connection) -> None:
    try:
        channel.close()
    except (*connection.channel_errors, *connection.connection_errors, OSError):
        pass


def workers_online() -> list[str]:
    """Node names of the workers that answered, sorted. The answer is the
    one `workers_resources` reads: a scrape sends one broadcast, not a ping
    and then a second one (each waits its whole timeout). A worker that does
    not know the command answers with an error, and is online all the same."""
    return sorted(_resources_replies())


@dataclass(frozen=True)
class WorkerStats:
    name: str
    concurrency: int
    processes: int
    tasks: int  # tasks this worker received since it started
    uptime: float  # seconds
    cpu_seconds: float  # user + system time of the main process
    max_rss_mib: float  # peak resident memory of the main process

    @property
    def cpu_percent(self) -> float:
        """Average CPU use since start: the main process only (the pool's
        children are separate processes that rusage(SELF) does not count)."""
        return 100 * self.cpu_seconds / self.uptime if self.uptime else 0.0


def workers_stats() -> list[WorkerStats]:
    return cache.get("stats", settings.OPS_WORKERS_CACHE_SECONDS, _stats)


def _stats() -> list[WorkerStats]:
    try:
        replies = current_app.control.inspect(timeout=settings.OPS_INSPECT_TIMEOUT_SECONDS).stats() or {}
    except broker_errors(current_app.connection_for_read()):
        logger.warning("Worker statistics unavailable: the broadcast failed.", exc_info=True)
        return []
    return [worker_stats(name, reply) for name, reply in sorted(replies.items())]


def worker_stats(name: str, reply: dict) -> WorkerStats:
    """One reply of `celery inspect stats`, read defensively: pools and
    Celery versions differ in what they report."""
    pool = reply.get("pool") or {}
    rusage = reply.get("rusage") or {}
    processes = pool.get("processes")
    return WorkerStats(
        name=name,
        concurrency=int(pool.get("max-concurrency") or 0),
        processes=len(processes) if isinstance(processes, list) else int(pool.get("max-concurrency") or 0),
        tasks=sum((reply.get("total") or {}).values()),
        uptime=float(reply.get("uptime") or 0),
        cpu_seconds=float(rusage.get("utime") or 0) + float(rusage.get("stime") or 0),
        # Linux reports ru_maxrss in KiB.
        max_rss_mib=float(rusage.get("maxrss") or 0) / 1024,
    )


@dataclass(frozen=True)
class ProcessResources:
    cpu_seconds: float  # user + system
    rss_bytes: int


@dataclass(frozen=True)
class WorkerResources:
    """What a worker's processes use now: its main process and the sum of
    its pool children (children come and go; their sum is the pool's)."""

    name: str
    main: ProcessResources
    pool: ProcessResources
    pool_processes: int


def workers_resources() -> list[WorkerResources]:
    """Every worker's answer to the `kit_resources` command (ops/
    worker_resources.py), sorted by name, leaving out workers that answered
    with an error."""
    return [
        worker_resources(name, answer)
        for name, answer in sorted(_resources_replies().items())
        if isinstance(answer, dict) and "error" not in answer
    ]


def _resources_replies() -> dict[str, Any]:
    return cache.get("resources", settings.OPS_WORKERS_CACHE_SECONDS, _broadcast_resources)


def _broadcast_resources() -> dict[str, Any]:
    """{worker name: answer} of one `kit_resources` broadcast; {} if the
    broker cannot be reached."""
    try:
        replies = current_app.control.broadcast(
            RESOURCES_COMMAND, reply=True, timeout=settings.OPS_INSPECT_TIMEOUT_SECONDS
        )
    except broker_errors(current_app.connection_for_read()):
        logger.warning("Workers unavailable: the broadcast failed.", exc_info=True)
        return {}
    answers = {}
    for reply in replies or []:
        answers.update(reply)
    return answers


def worker_resources(name: str, answer: dict) -> WorkerResources:
    """One worker's answer, read defensively (a worker that does not know
    the command answers {"error": ...}, left out by the caller)."""
    main = answer.get("main") or {}
    children = [child for child in answer.get("children") or [] if isinstance(child, dict)]
    return WorkerResources(
        name=name,
        main=ProcessResources(
            cpu_seconds=float(main.get("cpu_seconds") or 0), rss_bytes=int(main.get("rss_bytes") or 0)
        ),
        pool=ProcessResources(
            cpu_seconds=sum(float(child.get("cpu_seconds") or 0) for child in children),
            rss_bytes=sum(int(child.get("rss_bytes") or 0) for child in children),
        ),
        pool_processes=len(children),
    )
