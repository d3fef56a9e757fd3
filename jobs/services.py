"""The job core's operations on jobs: enqueue (one or many), retry and
cancel. Plain functions, testable without a broker; what reaches the broker
is in jobs.publishing, housekeeping in jobs.maintenance."""

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from celery import current_app
from django.db import IntegrityError, transaction
from django.utils import timezone

from jobs import publishing
from jobs.exceptions import BadInput
from jobs.models import ACTIVE_STATUSES, CANCELLABLE_STATUSES, RETRYABLE_STATUSES, Job, JobStatus
from jobs.queues import Priority, Queue
from jobs.registry import get_job_task

logger = logging.getLogger(__name__)

# Bulk inserts name at most this many rows per statement.
_IDS_PER_STATEMENT = 1000


def _canonical_json(value: Any, what: str) -> Any:
    """What is stored is what a retry replays, so it must be plain JSON."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise BadInput(f"{what} must be JSON (ids, strings, numbers): {exc}") from None


def job_enqueue(**options) -> Job:
    """Create a Job in the caller's transaction; publish it once that commits.

    If the broker is unreachable at commit the job stays PENDING and the
    outbox relay publishes it (invariant 1). With a `unique_key`, while a job
    with that key is active the existing job is returned instead. `queue`
    overrides the task's own (Django's Tasks API chooses it per call). The
    arguments are job_enqueue_or_find's.
    """
    job, _deduplicated = job_enqueue_or_find(**options)
    return job


def job_enqueue_or_find(
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
    queue: Queue | str | None = None,
) -> tuple[Job, bool]:
    """job_enqueue, also saying whether the job returned is an active one
    that already held `unique_key` (True: no new job was made). The API
    answers so; asking the database beforehand would cost a query per
    request, and could name a holder that finished meanwhile."""
    if countdown is not None:
        eta = timezone.now() + timedelta(seconds=countdown)
    job = _new_job(
        task_name,
        args,
        kwargs or {},
        priority,
        eta=eta,
        unique_key=unique_key,
        requested_by=requested_by,
        retry_of=retry_of,
        queue=queue,
    )
    try:
        if transaction.get_connection().in_atomic_block or _announced(job):
            # A savepoint, so a duplicate unique_key does not spoil the
            # caller's transaction; the partial unique index makes this
            # race-free. The task's on_created hook writes in it too.
            with transaction.atomic():
                job.save(force_insert=True)
                _announce_created([job])
        else:
            job.save(force_insert=True)  # one statement, its own transaction
    except IntegrityError:
        if unique_key is None:
            raise
        existing = Job.objects.filter(unique_key=unique_key, status__in=ACTIVE_STATUSES).first()
        if existing is None:  # it finished between our insert and this read
            return job_enqueue_or_find(
                task_name=task_name,
                args=args,
                kwargs=kwargs,
                priority=priority,
                eta=eta,
                unique_key=unique_key,
                requested_by=requested_by,
                retry_of=retry_of,
                queue=queue,
            )
        return existing, True
    transaction.on_commit(lambda: publishing.job_publish(job), robust=True)
    return job, False


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
    """Shorthand: enqueue(renditions_create, image.id, priority="high").

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


def job_enqueue_many(
    *,
    task_name: str,
    calls: Iterable[tuple[Sequence, Mapping]],
    priority: Priority | str = Priority.MEDIUM,
    eta: datetime | None = None,
    requested_by=None,
) -> list[Job]:
    """Many jobs of one task from one call: `calls` holds each job's
    (args, kwargs). The rows are inserted a thousand per statement in the
    caller's transaction, and published together once it commits
    (jobs.publishing.jobs_publish_many). Unique keys are not supported here: use
    job_enqueue for jobs that must not run twice at once."""
    jobs = [_new_job(task_name, args, kwargs, priority, eta=eta, requested_by=requested_by) for args, kwargs in calls]
    _insert_and_publish_together(jobs)
    return jobs


def _new_job(
    task_name: str,
    args: Sequence,
    kwargs: Mapping,
    priority: Priority | str,
    queue: Queue | str | None = None,
    **fields,
) -> Job:
    """An unsaved Job row for a call of the task: canonical JSON arguments,
    the given queue or else the task's. UnknownTask if there is no such
    task."""
    task = get_job_task(task_name)
    return Job(
        task_name=task_name,
        args=_canonical_json(list(args), "args"),
        kwargs=_canonical_json(dict(kwargs), "kwargs"),
        queue=Queue(queue or task.queue or Queue.DEFAULT).value,
        priority=Priority(priority).value,
        **fields,
    )


def _announced(job: Job) -> bool:
    """Whether the job's task declared an on_created hook (jobs.base_task)."""
    return get_job_task(job.task_name).on_created is not None


def _announce_created(jobs: Sequence[Job]) -> None:
    """Hand new rows to their task's on_created hook, one call per task."""
    by_task: dict[str, list[Job]] = {}
    for job in jobs:
        by_task.setdefault(job.task_name, []).append(job)
    for task_name, created in by_task.items():
        if (hook := get_job_task(task_name).on_created) is not None:
            hook(created)


def _insert_and_publish_together(jobs: list[Job]) -> None:
    """Insert the rows a thousand per statement in the caller's transaction;
    publish them together once it commits (jobs.publishing.jobs_publish_many)."""
    if not jobs:
        return
    with transaction.atomic():
        Job.objects.bulk_create(jobs, batch_size=_IDS_PER_STATEMENT)
        _announce_created(jobs)
    # A function, not a partial: Django names it when it logs a failure.
    transaction.on_commit(lambda: publishing.jobs_publish_many(jobs), robust=True)


def job_retry(*, job: Job, requested_by=None) -> Job:
    """A new job replaying the canonical args of one that ended badly. The
    old row stays as history (`retry_of`)."""
    _check_retryable(job)
    return job_enqueue(
        task_name=job.task_name,
        args=job.args,
        kwargs=job.kwargs,
        priority=job.priority,
        # The queue it ran on: apply_async(queue=...) and Django tasks
        # (jobs.django_tasks) may choose one other than the task's default.
        queue=job.queue,
        # The key still guards the work: a retry of a retry while the
        # first one is active returns it instead of running twice.
        unique_key=job.unique_key,
        requested_by=requested_by,
        retry_of=job,
    )


def _check_retryable(job: Job) -> None:
    if job.status not in RETRYABLE_STATUSES:
        raise BadInput(f"Job {job.id} is {job.status}; only failed, cancelled, dead or lost jobs can be retried.")


def jobs_retry_many(*, jobs: Sequence[Job], requested_by=None) -> list[Job]:
    """job_retry for many jobs at once, returning the new jobs in the order
    of `jobs`. The new rows are inserted together in the caller's transaction
    and published together once it commits, as job_enqueue_many does,
    instead of a commit and a confirmed publish per job. A job with a unique
    key is retried on its own (job_retry): its key is checked against the
    active jobs, and the active one is returned if there is one. BadInput if
    a job cannot be retried, UnknownTask if its task is gone: the caller
    sorts those out first (jobs.admin does)."""
    retries: list[Job] = []
    together: list[Job] = []
    for job in jobs:
        if job.unique_key is not None:
            retries.append(job_retry(job=job, requested_by=requested_by))
            continue
        _check_retryable(job)
        retry = _new_job(
            job.task_name, job.args, job.kwargs, job.priority, queue=job.queue, requested_by=requested_by, retry_of=job
        )
        together.append(retry)
        retries.append(retry)
    _insert_and_publish_together(together)
    return retries


def job_cancel(*, job: Job) -> bool:
    """Stop a job that has not finished. Returns False if it already had.

    Workers are told by a revoke broadcast; one that missed it reads the
    cancelled jobs from the database when its consumer starts
    (jobs.worker_consumer.CancelledJobs), and a redelivered copy finds the
    row cancelled (jobs.tracking.job_mark_started). A running job is
    terminated.
    """
    return bool(jobs_cancel_many(job_ids=[job.pk]))


def jobs_cancel_many(*, job_ids: Sequence) -> set:
    """job_cancel for many jobs at once; returns the ids of those it
    cancelled (the others had finished). Two UPDATEs for all of them, and
    one revoke broadcast, instead of both per job."""
    now = timezone.now()
    with transaction.atomic():
        # Locked until the UPDATEs commit, so they change exactly the jobs
        # read here: one that finished since the caller looked is left alone.
        statuses = dict(
            Job.objects.select_for_update()
            .filter(pk__in=job_ids, status__in=CANCELLABLE_STATUSES)
            .values_list("pk", "status")
        )
        running = [pk for pk, status in statuses.items() if status == JobStatus.STARTED]
        waiting = [pk for pk, status in statuses.items() if status != JobStatus.STARTED]
        Job.objects.filter(pk__in=waiting).update(status=JobStatus.REVOKED, finished_at=now, error="Cancelled.")
        Job.objects.filter(pk__in=running).update(
            status=JobStatus.REVOKED, finished_at=now, error="Cancelled while running."
        )
    if statuses:
        # One broadcast, terminating: a job the row shows as waiting may have
        # begun less than JOBS_START_RECORD_DELAY_MS ago (jobs.starts), and a
        # worker terminates only a job it is running; the others it keeps
        # from starting.
        try:
            current_app.control.revoke([str(pk) for pk in statuses], terminate=True, signal="SIGTERM")
        except publishing.PUBLISH_ERRORS as exc:
            logger.warning("%d jobs are cancelled in the database; the revoke broadcast failed: %s", len(statuses), exc)
    return set(statuses)
