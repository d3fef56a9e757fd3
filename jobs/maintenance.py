"""Housekeeping of the job table: requeue what failed, mark LOST what no
worker is running any more, prune what is past retention. Run by beat
(jobs.tasks) and the management commands."""

from datetime import timedelta
from itertools import islice

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from jobs import services
from jobs.exceptions import BadInput
from jobs.models import RETRYABLE_STATUSES, Job, JobStatus
from jobs.queues import QUEUE_TIME_LIMITS

# Requeue reads and retries the candidates this many at a time, each chunk
# in its own transaction.
_JOBS_PER_CHUNK = 1000


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


def jobs_requeue(
    *, statuses=(JobStatus.FAILURE, JobStatus.DEAD), task_name: str | None = None, requested_by=None
) -> int:
    """Retry every candidate (see jobs_requeue_candidates), iterating in
    chunks so millions of rows do not sit in memory."""
    jobs = jobs_requeue_candidates(statuses=statuses, task_name=task_name).iterator(chunk_size=_JOBS_PER_CHUNK)
    count = 0
    while chunk := list(islice(jobs, _JOBS_PER_CHUNK)):
        # Each chunk commits on its own: an interrupted requeue keeps what
        # it did, and running it again skips those (they have retries now).
        with transaction.atomic():
            count += len(services.jobs_retry_many(jobs=chunk, requested_by=requested_by))
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
            Job.objects.filter(status__in=[*RETRYABLE_STATUSES, JobStatus.SUCCESS], finished_at__lt=cutoff).values_list(
                "id", flat=True
            )[:batch_size]
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
        # Nothing cascades from TaskResult and nothing listens to its deletes,
        # so Django deletes these with one DELETE, collecting nothing.
        TaskResult.objects.filter(id__in=ids).delete()
    return deleted
