"""Housekeeping of the job table: requeue what failed, mark LOST what no
worker is running any more, mark DEAD what RabbitMQ dead-lettered, prune
what is past retention. Run by beat (jobs.tasks) and the management
commands."""

from datetime import timedelta
from itertools import islice

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Case, Value, When
from django.utils import timezone

from jobs import services
from jobs.exceptions import BadInput
from jobs.models import ACTIVE_STATUSES, RETRYABLE_STATUSES, Job, JobStatus
from jobs.queues import (
    DEAD_LETTER_NOTICE_QUEUE_NAME,
    DEAD_LETTER_QUEUE_NAME,
    QUEUE_TIME_LIMITS,
    QUORUM_DELIVERY_LIMIT,
)
from jobs.tracking import is_job_id

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


# Dead-lettered messages read per run: one UPDATE and one acknowledgement
# for all of them; a bigger pile is worked off over the next runs.
DEAD_LETTERS_PER_RUN = 500

_DEATH_REASONS = {
    "delivery_limit": f"handed back more than its queue's delivery limit ({QUORUM_DELIVERY_LIMIT}) allows",
    "rejected": "rejected by a consumer",
    "expired": "expired before a worker took it",
    "maxlen": "pushed out of a full queue",
}


def dead_letter_error(headers: dict, dead_letter_queue: str) -> str:
    """What a dead-lettered message's Job says, from the x-death header
    RabbitMQ adds (its first entry is the latest death). Read defensively:
    anyone allowed to publish to the dead-letter exchange could send
    anything."""
    deaths = headers.get("x-death")
    death = deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}
    reason = str(death.get("reason", "unknown"))
    x_death = f"x-death: reason {reason}, count {death.get('count', '?')}, from queue {death.get('queue', '?')}"
    kept = f"The message is kept in {dead_letter_queue} for inspection; retry the job once the cause is fixed."
    why = _DEATH_REASONS.get(reason, "for a reason the kit does not know")
    if reason == "delivery_limit":
        # The delivery count itself is not in the message: RabbitMQ gives up
        # on the first hand-back past the limit.
        return (
            f"Dead-lettered by RabbitMQ after more than {QUORUM_DELIVERY_LIMIT} deliveries ({x_death}): {why}. "
            f"Its worker most likely died each time before the task started (the kit counts only starts). {kept}"
        )
    return f"Dead-lettered by RabbitMQ ({x_death}): {why}. {kept}"


def jobs_mark_dead_lettered(*, limit: int = DEAD_LETTERS_PER_RUN, connection=None) -> int:
    """Mark DEAD the unfinished Jobs of messages RabbitMQ dead-lettered
    itself (past a quorum queue's delivery limit, say, when the kit's own
    count in jobs.tracking never ran because the worker died first).

    Reads the kit's copy of the dead letters (jobs.queues.
    DEAD_LETTER_NOTICE_QUEUE_NAME), never the dead-letter queue a person
    inspects, so that queue and its depth in /metrics stay as they are. At
    most `limit` messages, one UPDATE, then one acknowledgement for them
    all once the UPDATE has committed: a crash in between hands them back,
    and marking them again changes nothing (finished jobs are left alone).
    Returns the number of Jobs marked DEAD. A no-op on the embedded
    filesystem broker (nothing dead-letters there) and where the queue was
    never declared."""
    queue_type = settings.KIT_QUEUE_TYPE
    notices_name = DEAD_LETTER_NOTICE_QUEUE_NAME[queue_type]
    owned = connection is None
    connection = current_app.connection_for_write() if owned else connection
    try:
        if connection.transport.driver_type != "amqp":
            return 0
        channel = connection.channel()
        try:
            try:
                channel.queue_declare(queue=notices_name, passive=True)
            except connection.channel_errors:
                # 404: nobody declared it (a broker set up without the kit's
                # definitions and no worker started yet). The failed declare
                # closed the channel.
                return 0
            errors: dict[str, str] = {}
            last_tag = None
            for _ in range(limit):
                message = channel.basic_get(queue=notices_name, no_ack=False)
                if message is None:
                    break
                last_tag = message.delivery_info["delivery_tag"]
                headers = message.headers or {}
                job_id = str(headers.get("id", ""))
                if is_job_id(job_id):
                    errors[job_id] = dead_letter_error(headers, DEAD_LETTER_QUEUE_NAME[queue_type])
            marked = 0
            if errors:
                marked = Job.objects.filter(pk__in=list(errors), status__in=ACTIVE_STATUSES).update(
                    status=JobStatus.DEAD,
                    finished_at=timezone.now(),
                    error=Case(*(When(pk=job_id, then=Value(error)) for job_id, error in errors.items())),
                )
            if last_tag is not None:
                channel.basic_ack(last_tag, multiple=True)
            return marked
        finally:
            if channel.is_open:
                channel.close()
    finally:
        if owned:
            connection.release()


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
