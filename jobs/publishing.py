"""Publishing jobs to the broker: one job after its commit, many together
with the broker's confirms awaited once, and the outbox relay that publishes
what committed but never reached the broker (DESIGN.md, invariant 1)."""

import inspect
import logging
import time
from datetime import timedelta

from amqp.exceptions import AMQPError, MessageNacked
from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerUnavailable

from jobs.exceptions import UnknownTask
from jobs.models import Job, JobStatus
from jobs.queues import PRIORITY_VALUE, QUEUE_TIME_LIMITS, Priority, Queue, lane_name
from jobs.registry import get_job_task
from jobs.tracking import job_mark_queued
from upstream.amqp import pipeline_confirms

logger = logging.getLogger(__name__)

# Errors that mean "the broker did not take the message": the job stays
# PENDING and the outbox relay publishes it later.
PUBLISH_ERRORS = (BrokerUnavailable, AMQPError, MessageNacked, ConnectionError, OSError)
# One quick reconnect covers a broker that restarted since the pooled
# connection was opened; beyond that the relay takes over, so a web request
# never hangs on a broker that is down.
_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}
# Bulk publishing waits for the broker's confirms once per this many
# messages.
_MESSAGES_PER_CONFIRM_WAIT = 1000
# Past this the unconfirmed rest of a bulk publish is left to the relay.
_CONFIRM_TIMEOUT_SECONDS = 30


def _eta_horizon():
    return timezone.now() + timedelta(seconds=settings.JOBS_BROKER_ETA_HORIZON_SECONDS)


def _held_back(job: Job) -> bool:
    """A job due later than the horizon waits in the database, not on the
    broker: a worker holds a message with an ETA unacknowledged until it is
    due, and RabbitMQ closes the channel of a consumer that holds one longer
    than its consumer_timeout. The relay publishes it once it is near."""
    return job.eta is not None and job.eta > _eta_horizon()


def _send(job: Job, **options) -> None:
    """Hand one job's message to Celery: its id is the job's, its limits
    the task's own or its queue's."""
    task = get_job_task(job.task_name)
    limits = QUEUE_TIME_LIMITS[Queue(job.queue)]
    current_app.send_task(
        job.task_name,
        args=job.args,
        kwargs=job.kwargs,
        task_id=str(job.id),
        # The queue itself (classic) or its priority lane (quorum).
        queue=lane_name(job.queue, job.priority, settings.KIT_QUEUE_TYPE),
        priority=PRIORITY_VALUE[Priority(job.priority)],
        eta=job.eta if job.eta and job.eta > timezone.now() else None,
        soft_time_limit=task.soft_time_limit or limits.soft,
        time_limit=task.time_limit or limits.hard,
        **options,
    )


def job_publish(job: Job) -> bool:
    """Send a committed job to the broker and mark it QUEUED.

    Returns False, leaving the job PENDING for the relay, when the broker does
    not confirm the message, or when the job is due too far ahead to wait on
    the broker (see _held_back).
    """
    if _held_back(job):
        return False
    try:
        _send(job, retry_policy=_PUBLISH_RETRY_POLICY)
    except PUBLISH_ERRORS as exc:
        logger.warning("Job %s stays PENDING, the outbox relay will publish it: %s", job.id, exc)
        return False
    job_mark_queued([job.pk])
    # The caller's copy too: an API answer built from it (jobs.api) says
    # QUEUED, not "the broker has not confirmed it". A worker may already
    # have started the job; the row says so, and the next read shows it.
    if job.status == JobStatus.PENDING:
        job.status, job.queued_at = JobStatus.QUEUED, timezone.now()
    return True


class _Confirms:
    """The broker's publisher confirms on one channel. Delivery tags count
    the channel's messages from 1 in publish order; an ack or nack may
    settle one tag or, with `multiple`, every unsettled tag up to it."""

    ACKED, NACKED = 1, 2

    def __init__(self, expected: int):
        self.outcome = bytearray(expected + 1)  # 0: not settled yet
        self.settled = 0
        self._lowest_unsettled = 1

    def _settle(self, tag: int, multiple: bool, outcome: int) -> None:
        if tag >= len(self.outcome):
            # More messages than jobs: a task-sent event per job (Flower's
            # CELERY_TASK_SEND_SENT_EVENT) goes out on the same channel.
            self.outcome.extend(bytes(tag + 1 - len(self.outcome)))
        tags = range(self._lowest_unsettled, tag + 1) if multiple else (tag,)
        for each in tags:
            if not self.outcome[each]:
                self.outcome[each] = outcome
                self.settled += 1
        if multiple:
            self._lowest_unsettled = max(self._lowest_unsettled, tag + 1)

    def on_ack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple, self.ACKED)

    def on_nack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple, self.NACKED)

    def acked(self, tag: int) -> bool:
        return tag < len(self.outcome) and self.outcome[tag] == self.ACKED


def _publish_awaiting_confirms_once(jobs: list[Job], confirmed: list[Job]) -> None:
    """Publish every job on one fresh channel of a pooled connection, then
    wait once for the broker's confirms of the lot. (The kit's connections
    otherwise wait for each publish's confirm: a round trip per message.)
    Appends to `confirmed` the jobs the broker confirmed, also when the
    connection fails part way (then it raises): the others stay PENDING."""
    with current_app.pool.acquire(block=True) as conn:
        conn.ensure_connection(max_retries=1)
        if conn.transport.driver_type != "amqp":
            # No publisher confirms (the embedded filesystem broker): the
            # message is stored when the publish returns.
            with current_app.producer_or_acquire() as producer:
                for job in jobs:
                    _send(job, producer=producer, retry=False)
                    confirmed.append(job)
            return
        channel = conn.channel()
        confirms = _Confirms(expected=len(jobs))
        # The delivery tag of each job's task message: a job may publish a
        # task-sent event after it (CELERY_TASK_SEND_SENT_EVENT), so tags
        # are counted, not assumed one per job.
        job_tags: list[int] = []
        try:
            # Confirms are counted together below, not waited for per message.
            published = pipeline_confirms(channel)
            channel.events["basic_ack"].add(confirms.on_ack)
            channel.events["basic_nack"].add(confirms.on_nack)
            producer = current_app.amqp.Producer(channel, auto_declare=False)
            for job in jobs:
                job_tags.append(published.count + 1)
                _send(job, producer=producer, retry=False)
            deadline = time.monotonic() + _CONFIRM_TIMEOUT_SECONDS
            while confirms.settled < published.count:
                if (remaining := deadline - time.monotonic()) <= 0:
                    raise TimeoutError(
                        f"The broker confirmed {confirms.settled} of {published.count} messages in time."
                    )
                conn.drain_events(timeout=remaining)
        finally:
            confirmed += [job for tag, job in zip(job_tags, jobs, strict=False) if confirms.acked(tag)]
            try:
                channel.close()
            except PUBLISH_ERRORS:
                pass


def jobs_publish_many(jobs: list[Job]) -> int:
    """Send committed jobs to the broker together and mark the confirmed ones
    QUEUED; the rest stay PENDING for the relay (as with job_publish).
    Returns how many the broker confirmed."""
    due = [job for job in jobs if not _held_back(job)]
    confirmed: list[Job] = []
    try:
        for start in range(0, len(due), _MESSAGES_PER_CONFIRM_WAIT):
            _publish_awaiting_confirms_once(due[start : start + _MESSAGES_PER_CONFIRM_WAIT], confirmed)
    except (*PUBLISH_ERRORS, TimeoutError) as exc:
        logger.warning("%d jobs stay PENDING, the outbox relay will publish them: %s", len(due) - len(confirmed), exc)
    job_mark_queued([job.pk for job in confirmed])
    return len(confirmed)


def outbox_relay(*, grace_seconds: int | None = None, batch_size: int = 100) -> int:
    """Publish jobs that committed but never reached the broker.

    Jobs younger than the grace period are left to their own on-commit
    publish; jobs due beyond the ETA horizon wait until they come near.
    Rows are locked with SKIP LOCKED (PostgreSQL), so two relays never
    publish the same job; on SQLite there is one writer anyway. The lock is
    held until the batch commits, and a worker that already received one of
    its jobs waits for it to mark the job STARTED: batches stay small.
    Returns how many jobs were published; stops at the first broker failure.
    A job that can never be published fails on its own, with the reason on
    the Job (_fail_unpublishable); the others go on.
    """
    if grace_seconds is None:
        grace_seconds = settings.JOBS_RELAY_GRACE_SECONDS
    cutoff = timezone.now() - timedelta(seconds=grace_seconds)
    published = 0
    while True:
        with transaction.atomic():
            batch = list(
                Job.objects.select_for_update(skip_locked=True)
                .filter(status=JobStatus.PENDING, created_at__lt=cutoff)
                .filter(Q(eta__isnull=True) | Q(eta__lte=_eta_horizon()))
                .order_by("created_at")[:batch_size]
            )
            publishable = _fail_unpublishable(batch)
            confirmed = jobs_publish_many(publishable)
            published += confirmed
        if confirmed < len(publishable) or len(batch) < batch_size:
            return published


def _unpublishable_reason(job: Job) -> str | None:
    """Why a PENDING job can never be published (its task was removed or
    renamed, its stored arguments no longer fit the task, its queue or
    priority is gone), or None if it can."""
    try:
        task = get_job_task(job.task_name)
    except UnknownTask:
        return f"Not published: no task named {job.task_name!r} exists any more (removed or renamed)."
    try:
        Queue(job.queue)
        Priority(job.priority)
    except ValueError as exc:
        return f"Not published: {exc}."
    try:
        inspect.signature(task.run).bind(*job.args, **job.kwargs)
    except TypeError as exc:
        return f"Not published: its stored arguments no longer fit {job.task_name}: {exc}."
    return None


def _fail_unpublishable(jobs: list[Job]) -> list[Job]:
    """Fail, each with its reason, the jobs of a relay batch that can never
    be published; return the others. One such row must not stop the relay
    (it would raise on every run, and every job behind it stay PENDING)."""
    publishable = []
    for job in jobs:
        reason = _unpublishable_reason(job)
        if reason is None:
            publishable.append(job)
            continue
        logger.error("Job %s failed by the outbox relay: %s", job.pk, reason)
        Job.objects.filter(pk=job.pk, status=JobStatus.PENDING).update(
            status=JobStatus.FAILURE, finished_at=timezone.now(), error=reason
        )
    return publishable
