"""The job core's operations: enqueue, publish (and the outbox relay),
retry, cancel, requeue and prune. Plain functions, testable without a broker
except where they publish."""

import inspect
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from amqp.exceptions import AMQPError, MessageNacked
from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerUnavailable

from jobs.exceptions import BadInput, UnknownTask
from jobs.models import ACTIVE_STATUSES, CANCELLABLE_STATUSES, RETRYABLE_STATUSES, Job, JobStatus
from jobs.queues import PRIORITY_VALUE, QUEUE_TIME_LIMITS, Priority, Queue, lane_name
from jobs.registry import get_job_task
from jobs.tracking import relaxed_durability, run_tracking_statement
from upstream.amqp import pipeline_confirms

logger = logging.getLogger(__name__)

# Errors that mean "the broker did not take the message": the job stays
# PENDING and the outbox relay publishes it later.
_PUBLISH_ERRORS = (BrokerUnavailable, AMQPError, MessageNacked, ConnectionError, OSError)
# One quick reconnect covers a broker that restarted since the pooled
# connection was opened; beyond that the relay takes over, so a web request
# never hangs on a broker that is down.
_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}
# Bulk publishing waits for the broker's confirms once per this many
# messages; bulk writes name at most this many rows per statement.
_MESSAGES_PER_CONFIRM_WAIT = 1000
_IDS_PER_STATEMENT = 1000
# Past this the unconfirmed rest of a bulk publish is left to the relay.
_CONFIRM_TIMEOUT_SECONDS = 30


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
    queue: Queue | str | None = None,
) -> Job:
    """Create a Job in the caller's transaction; publish it once that commits.

    If the broker is unreachable at commit the job stays PENDING and the
    outbox relay publishes it (invariant 1). With a `unique_key`, while a job
    with that key is active the existing job is returned instead. `queue`
    overrides the task's own (Django's Tasks API chooses it per call).
    """
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
            return job_enqueue(
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
        return existing
    transaction.on_commit(lambda: job_publish(job), robust=True)
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


def _mark_queued(job_ids: list) -> None:
    """PENDING -> QUEUED once the broker has the messages: a tracking write,
    relaxed like the workers' (jobs.tracking.relaxed_durability; if a crash
    forgets it, the relay publishes the job again and a copy that finds it
    finished does nothing). A fast worker may already have started a job:
    it set queued_at itself (job_mark_started), so the row is left alone."""
    now = timezone.now()
    for start in range(0, len(job_ids), _IDS_PER_STATEMENT):
        chunk = job_ids[start : start + _IDS_PER_STATEMENT]

        def build(connection, chunk=chunk):
            table = connection.ops.quote_name(Job._meta.db_table)
            ids = [Job._meta.pk.get_db_prep_value(pk, connection) for pk in chunk]
            sql = f"""
                UPDATE {table} SET
                    status = CASE WHEN status = %s THEN %s ELSE status END,
                    queued_at = %s
                {relaxed_durability(connection)}
                WHERE {table}.id IN ({", ".join(["%s"] * len(ids))}) AND queued_at IS NULL
            """
            queued_at = Job._meta.get_field("queued_at").get_db_prep_save(now, connection)
            params = [JobStatus.PENDING, JobStatus.QUEUED, queued_at, *ids]
            return sql, params

        run_tracking_statement(build)


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
    except _PUBLISH_ERRORS as exc:
        logger.warning("Job %s stays PENDING, the outbox relay will publish it: %s", job.id, exc)
        return False
    _mark_queued([job.pk])
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
            except _PUBLISH_ERRORS:
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
    except (*_PUBLISH_ERRORS, TimeoutError) as exc:
        logger.warning("%d jobs stay PENDING, the outbox relay will publish them: %s", len(due) - len(confirmed), exc)
    _mark_queued([job.pk for job in confirmed])
    return len(confirmed)


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
    (jobs_publish_many). Unique keys are not supported here: use
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
    publish them together once it commits (jobs_publish_many)."""
    if not jobs:
        return
    with transaction.atomic():
        Job.objects.bulk_create(jobs, batch_size=_IDS_PER_STATEMENT)
        _announce_created(jobs)
    # A function, not a partial: Django names it when it logs a failure.
    transaction.on_commit(lambda: jobs_publish_many(jobs), robust=True)


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

    The database is the authority: a worker that receives a cancelled job
    acknowledges it without running (jobs.tracking.job_mark_started), even if
    it missed the revoke broadcast. A running job is also terminated.
    """
    return bool(jobs_cancel_many(job_ids=[job.pk]))


def jobs_cancel_many(*, job_ids: Sequence) -> set:
    """job_cancel for many jobs at once; returns the ids of those it
    cancelled (the others had finished). Two UPDATEs for all of them, and at
    most two revoke broadcasts (one terminating the running jobs), instead of
    both per job."""
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
    for ids, terminate in ((waiting, False), (running, True)):
        if not ids:
            continue
        try:
            current_app.control.revoke([str(pk) for pk in ids], terminate=terminate, signal="SIGTERM")
        except _PUBLISH_ERRORS as exc:
            logger.warning("%d jobs are cancelled in the database; the revoke broadcast failed: %s", len(ids), exc)
    return set(statuses)


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
    jobs = jobs_requeue_candidates(statuses=statuses, task_name=task_name).iterator(chunk_size=_IDS_PER_STATEMENT)
    count = 0
    while chunk := list(islice(jobs, _IDS_PER_STATEMENT)):
        # Each chunk commits on its own: an interrupted requeue keeps what
        # it did, and running it again skips those (they have retries now).
        with transaction.atomic():
            count += len(jobs_retry_many(jobs=chunk, requested_by=requested_by))
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
