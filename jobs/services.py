"""The job core's operations: enqueue, publish (and the outbox relay),
retry, cancel, requeue and prune. Plain functions, testable without a broker
except where they publish."""

import json
import logging
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from amqp.exceptions import AMQPError, MessageNacked
from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Coalesce, Least
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerUnavailable

from jobs.exceptions import BadInput
from jobs.models import ACTIVE_STATUSES, CANCELLABLE_STATUSES, RETRYABLE_STATUSES, Job, JobStatus
from jobs.queues import PRIORITY_VALUE, QUEUE_TIME_LIMITS, Priority, Queue
from jobs.registry import get_job_task

logger = logging.getLogger(__name__)

# Errors that mean "the broker did not take the message": the job stays
# PENDING and the outbox relay publishes it later.
_PUBLISH_ERRORS = (BrokerUnavailable, AMQPError, MessageNacked, ConnectionError, OSError)
# One quick reconnect covers a broker that restarted since the pooled
# connection was opened; beyond that the relay takes over, so a web request
# never hangs on a broker that is down.
_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}


def _canonical_json(value: Any, what: str) -> Any:
    """What is stored is what a retry replays, so it must be plain JSON."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise BadInput(f"{what} must be JSON (ids, strings, numbers): {exc}") from None


def job_enqueue(
    *,
    task_name: str,
    args: list | tuple = (),
    kwargs: dict | None = None,
    priority: Priority | str = Priority.MEDIUM,
    countdown: float | None = None,
    eta: datetime | None = None,
    unique_key: str | None = None,
    requested_by=None,
    retry_of: Job | None = None,
) -> Job:
    """Create a Job in the caller's transaction; publish it once that commits.

    If the broker is unreachable at commit the job stays PENDING and the
    outbox relay publishes it (invariant 1). With a `unique_key`, while a job
    with that key is active the existing job is returned instead.
    """
    task = get_job_task(task_name)
    priority = Priority(priority)
    if countdown is not None:
        eta = timezone.now() + timedelta(seconds=countdown)
    job = Job(
        task_name=task_name,
        args=_canonical_json(list(args), "args"),
        kwargs=_canonical_json(dict(kwargs or {}), "kwargs"),
        queue=Queue(task.queue or Queue.DEFAULT).value,
        priority=priority.value,
        eta=eta,
        unique_key=unique_key,
        requested_by=requested_by,
        retry_of=retry_of,
    )
    try:
        # A savepoint, so a duplicate unique_key does not spoil the caller's
        # transaction; the partial unique index makes this race-free.
        with transaction.atomic():
            job.save(force_insert=True)
    except IntegrityError:
        if unique_key is None:
            raise
        existing = Job.objects.filter(unique_key=unique_key, status__in=ACTIVE_STATUSES).first()
        if existing is None:  # it finished between our insert and this read
            return job_enqueue(
                task_name=task_name, args=args, kwargs=kwargs, priority=priority, eta=eta,
                unique_key=unique_key, requested_by=requested_by, retry_of=retry_of,
            )  # fmt: skip
        return existing
    transaction.on_commit(partial(job_publish, job), robust=True)
    return job


def enqueue(
    task,
    *args,
    priority: Priority | str = Priority.MEDIUM,
    countdown: float | None = None,
    eta: datetime | None = None,
    unique_key: str | None = None,
    requested_by=None,
    **kwargs,
) -> Job:
    """Shorthand: enqueue(thumbnail_create, image.id, priority="high").

    `task` is a task or its name. A task whose own keyword arguments are
    named like the options here goes through job_enqueue instead.
    """
    return job_enqueue(
        task_name=getattr(task, "name", task),
        args=args,
        kwargs=kwargs,
        priority=priority,
        countdown=countdown,
        eta=eta,
        unique_key=unique_key,
        requested_by=requested_by,
    )


def _eta_horizon():
    return timezone.now() + timedelta(seconds=settings.JOBS_BROKER_ETA_HORIZON_SECONDS)


def _held_back(job: Job) -> bool:
    """A job due later than the horizon waits in the database, not on the
    broker: a worker holds a message with an ETA unacknowledged until it is
    due, and RabbitMQ closes the channel of a consumer that holds one longer
    than its consumer_timeout. The relay publishes it once it is near."""
    return job.eta is not None and job.eta > _eta_horizon()


def job_publish(job: Job) -> bool:
    """Send a committed job to the broker and mark it QUEUED.

    Returns False, leaving the job PENDING for the relay, when the broker does
    not confirm the message, or when the job is due too far ahead to wait on
    the broker (see _held_back).
    """
    if _held_back(job):
        return False
    task = get_job_task(job.task_name)
    limits = QUEUE_TIME_LIMITS[Queue(job.queue)]
    eta = job.eta if job.eta and job.eta > timezone.now() else None
    try:
        current_app.send_task(
            job.task_name,
            args=job.args,
            kwargs=job.kwargs,
            task_id=str(job.id),
            queue=job.queue,
            priority=PRIORITY_VALUE[Priority(job.priority)],
            eta=eta,
            soft_time_limit=task.soft_time_limit or limits.soft,
            time_limit=task.time_limit or limits.hard,
            retry_policy=_PUBLISH_RETRY_POLICY,
        )
    except _PUBLISH_ERRORS as exc:
        logger.warning("Job %s stays PENDING, the outbox relay will publish it: %s", job.id, exc)
        return False
    # A fast worker may already have moved it to STARTED: keep that status,
    # and record the queue time, no later than the start.
    now = timezone.now()
    Job.objects.filter(pk=job.pk, queued_at__isnull=True).update(
        status=Case(When(status=JobStatus.PENDING, then=Value(JobStatus.QUEUED)), default=F("status")),
        queued_at=Least(Value(now), Coalesce(F("started_at"), Value(now))),
    )
    return True


def outbox_relay(*, grace_seconds: int | None = None, batch_size: int = 100) -> int:
    """Publish jobs that committed but never reached the broker.

    Jobs younger than the grace period are left to their own on-commit
    publish; jobs due beyond the ETA horizon wait until they come near.
    Rows are locked with SKIP LOCKED (PostgreSQL), so two relays never
    publish the same job; on SQLite there is one writer anyway. The lock is
    held until the batch commits, and a worker that already received one of
    its jobs waits for it to mark the job STARTED: batches stay small.
    Returns how many jobs were published; stops at the first broker failure.
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
            for job in batch:
                if not job_publish(job):
                    return published
                published += 1
        if len(batch) < batch_size:
            return published


def job_retry(*, job: Job, requested_by=None) -> Job:
    """A new job replaying the canonical args of one that ended badly. The
    old row stays as history (`retry_of`)."""
    if job.status not in RETRYABLE_STATUSES:
        raise BadInput(f"Job {job.id} is {job.status}; only failed, cancelled, dead or lost jobs can be retried.")
    return job_enqueue(
        task_name=job.task_name,
        args=job.args,
        kwargs=job.kwargs,
        priority=job.priority,
        # The key still guards the work: a retry of a retry while the
        # first one is active returns it instead of running twice.
        unique_key=job.unique_key,
        requested_by=requested_by,
        retry_of=job,
    )


def job_cancel(*, job: Job) -> bool:
    """Stop a job that has not finished. Returns False if it already had.

    The database is the authority: a worker that receives a cancelled job
    acknowledges it without running (jobs.tracking.job_mark_started), even if
    it missed the revoke broadcast. A running job is also terminated.
    """
    now = timezone.now()
    cancelled = (
        Job.objects.filter(pk=job.pk, status__in=CANCELLABLE_STATUSES)
        .exclude(status=JobStatus.STARTED)
        .update(status=JobStatus.REVOKED, finished_at=now, error="Cancelled.")
    )
    running = Job.objects.filter(pk=job.pk, status=JobStatus.STARTED).update(
        status=JobStatus.REVOKED, finished_at=now, error="Cancelled while running."
    )
    if not (cancelled or running):
        return False
    try:
        current_app.control.revoke(str(job.id), terminate=bool(running), signal="SIGTERM")
    except _PUBLISH_ERRORS as exc:
        logger.warning("Job %s is cancelled in the database; the revoke broadcast failed: %s", job.id, exc)
    return True


def jobs_requeue_candidates(*, statuses=(JobStatus.FAILURE, JobStatus.DEAD), task_name: str | None = None):
    """Jobs in the given end states (optionally of one task) that were not
    retried yet: retrying each once, never twice."""
    statuses = [JobStatus(status) for status in statuses]
    if not set(statuses) <= set(RETRYABLE_STATUSES):
        raise BadInput("Only FAILURE, REVOKED, DEAD and LOST jobs can be requeued.")
    jobs = Job.objects.filter(status__in=statuses, retries__isnull=True)
    if task_name:
        jobs = jobs.filter(task_name=task_name)
    return jobs


def jobs_requeue(*, statuses=(JobStatus.FAILURE, JobStatus.DEAD), task_name: str | None = None, requested_by=None) -> int:
    """Retry every candidate (see jobs_requeue_candidates), iterating in
    chunks so millions of rows do not sit in memory."""
    jobs = jobs_requeue_candidates(statuses=statuses, task_name=task_name)
    count = 0
    for job in jobs.iterator(chunk_size=1000):
        job_retry(job=job, requested_by=requested_by)
        count += 1
    return count


def jobs_reap_lost(*, grace_seconds: int | None = None) -> int:
    """Mark LOST the jobs STARTED longer than their queue's hard time limit
    plus a grace period: by then the worker would have been killed by the
    limit and the job recorded as failed, so nobody is running it. (A job
    whose worker died is redelivered by RabbitMQ and starts afresh, so it is
    not caught here unless no worker consumes its queue any more.) One
    UPDATE per queue; a person can retry them from the admin."""
    if grace_seconds is None:
        grace_seconds = settings.JOBS_LOST_GRACE_SECONDS
    now = timezone.now()
    reaped = 0
    for queue, limits in QUEUE_TIME_LIMITS.items():
        reaped += Job.objects.filter(
            status=JobStatus.STARTED,
            queue=queue.value,
            started_at__lt=now - timedelta(seconds=limits.hard + grace_seconds),
        ).update(
            status=JobStatus.LOST,
            finished_at=now,
            error=f"Started more than {limits.hard + grace_seconds} s ago and never finished: its worker vanished.",
        )
    return reaped


def jobs_prune(*, older_than: timedelta | None = None, batch_size: int = 5000) -> int:
    """Delete finished jobs and their TaskResult rows older than the
    retention period, one batch per transaction (short locks, flat memory)."""
    from django_celery_results.models import TaskResult

    if older_than is None:
        older_than = timedelta(days=settings.JOBS_RETENTION_DAYS)
    cutoff = timezone.now() - older_than
    deleted = 0
    while True:
        ids = list(
            Job.objects.filter(status__in=[*RETRYABLE_STATUSES, JobStatus.SUCCESS], finished_at__lt=cutoff)
            .values_list("id", flat=True)[:batch_size]
        )
        if not ids:
            break
        with transaction.atomic():
            TaskResult.objects.filter(task_id__in=[str(pk) for pk in ids]).delete()
            # delete(), not a raw delete: newer retries point here (SET NULL).
            deleted += Job.objects.filter(pk__in=ids).delete()[1].get(Job._meta.label, 0)
    # Results of untracked tasks (beat's own, plain Celery calls).
    while True:
        ids = list(TaskResult.objects.filter(date_done__lt=cutoff).values_list("id", flat=True)[:batch_size])
        if not ids:
            break
        TaskResult.objects.filter(id__in=ids)._raw_delete(TaskResult.objects.db)
    return deleted
