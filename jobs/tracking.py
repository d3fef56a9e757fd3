"""Worker-side state changes of a Job, each one SQL statement.

These run once or twice per job on the hot path, so none of them reads a
row to write it back (DESIGN.md, invariant 6).
"""

import uuid
from contextlib import contextmanager
from enum import Enum

from celery import states
from django.conf import settings
from django.db import connections, router, transaction
from django.utils import timezone

from jobs.models import Job, JobStatus
from jobs.queues import MAX_DELIVERIES


class StartOutcome(Enum):
    RUN = "run"  # the job is STARTED: run the task body
    SKIP = "skip"  # cancelled, dead or already finished: acknowledge, do nothing
    UNTRACKED = "untracked"  # no Job row: a plain Celery call, run it as such


# LOST is runnable: the reaper marks a job LOST when its worker has been gone
# too long, but if the broker still had the message after all, running it
# is better than dropping it.
_RUNNABLE = (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.STARTED, JobStatus.RETRYING, JobStatus.LOST)


@contextmanager
def tracking_transaction(using: str | None = None):
    """A transaction for tracking writes that does not wait for the disk.

    On PostgreSQL each commit otherwise waits for a WAL flush, which costs
    more than the rest of the tracking together. With synchronous_commit off
    for these transactions only, an operating-system crash of the database
    host can forget the last fraction of a second of status changes; it never
    corrupts them, and never touches the caller's own writes, the Job rows
    created at enqueue, or what the task itself writes. A job whose SUCCESS
    was forgotten shows as STARTED after such a crash. Set
    JOBS_DURABLE_TRACKING=true to wait for the disk anyway.
    """
    using = using or router.db_for_write(Job)
    connection = connections[using]
    # Inside a task's own transaction SET LOCAL would reach the task's
    # writes too: only the outermost transaction may relax durability.
    outermost = not connection.in_atomic_block
    with transaction.atomic(using=using):
        if outermost and connection.vendor == "postgresql" and not settings.JOBS_DURABLE_TRACKING:
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        yield connection


def _is_job_id(task_id: str) -> bool:
    # Job ids are UUIDs; Celery's own tasks may use other ids.
    try:
        uuid.UUID(str(task_id))
    except ValueError:
        return False
    return True


def job_mark_started(*, job_id: str, worker: str) -> StartOutcome:
    """Count a delivery and move the job to STARTED, or to DEAD when it has
    started MAX_DELIVERIES times without finishing, in one UPDATE.

    STARTED is runnable because a job whose worker died mid-task comes back
    in that state (LOST too, see _RUNNABLE). SUCCESS, FAILURE, REVOKED and
    DEAD are not: a redelivered
    copy of a finished job, or a job cancelled while queued, is acknowledged
    without running.
    """
    if not _is_job_id(job_id):
        return StartOutcome.UNTRACKED
    using = router.db_for_write(Job)
    table = connections[using].ops.quote_name(Job._meta.db_table)
    pk = Job._meta.pk.get_db_prep_value(job_id, connections[using])
    now = timezone.now()
    dead_message = (
        f"Started {MAX_DELIVERIES} times without finishing: its worker died each time "
        "(a crash, an out-of-memory kill, or a poison message). Retry it once the cause is fixed."
    )
    placeholders = ", ".join(["%s"] * len(_RUNNABLE))
    # Standard SQL: every right-hand column reference reads the old row, so
    # `deliveries` in the CASE is the count before this delivery.
    sql = f"""
        UPDATE {table} SET
            status = CASE WHEN deliveries >= %s THEN %s ELSE %s END,
            error = CASE WHEN deliveries >= %s THEN %s ELSE error END,
            finished_at = CASE WHEN deliveries >= %s THEN %s ELSE NULL END,
            deliveries = deliveries + 1,
            attempts = attempts + 1,
            started_at = %s,
            worker = %s
        WHERE id = %s AND status IN ({placeholders})
        RETURNING status
    """
    params = [
        MAX_DELIVERIES, JobStatus.DEAD, JobStatus.STARTED,
        MAX_DELIVERIES, dead_message,
        MAX_DELIVERIES, now,
        now, worker[:200], pk, *_RUNNABLE,
    ]  # fmt: skip
    with tracking_transaction(using) as connection, connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is not None:
        return StartOutcome.RUN if row[0] == JobStatus.STARTED else StartOutcome.SKIP
    # Rare path: the row is finished/cancelled, or there is none at all.
    if Job.objects.using(using).filter(pk=job_id).exists():
        return StartOutcome.SKIP
    return StartOutcome.UNTRACKED


def job_report_progress(*, job_id: str, percent: int, message: str = "") -> None:
    percent = max(0, min(100, int(percent)))
    with tracking_transaction():
        Job.objects.filter(pk=job_id).update(progress=percent, progress_message=message[:200])


def error_summary(encoded_exception) -> str:
    """One readable line from an exception as Celery encodes it for storage
    ({"exc_type": ..., "exc_message": [...]}) or from an exception instance."""
    if isinstance(encoded_exception, BaseException):
        exc_type = type(encoded_exception).__name__
        parts = encoded_exception.args
    elif isinstance(encoded_exception, dict):
        exc_type = encoded_exception.get("exc_type", "Error")
        parts = encoded_exception.get("exc_message", ())
        if isinstance(parts, str):
            parts = (parts,)
    else:
        return str(encoded_exception)
    if exc_type == "TimeLimitExceeded":
        limit = parts[0] if parts else "?"
        return f"Hard time limit exceeded ({limit} s): the worker child running it was killed."
    if exc_type == "SoftTimeLimitExceeded":
        return "Soft time limit exceeded: the task ran longer than its queue allows."
    message = " ".join(str(part) for part in parts)
    return f"{exc_type}: {message}" if message else exc_type


def job_record_outcome(*, job_id: str, celery_state: str, result, using: str | None = None) -> None:
    """Mirror a state Celery stores for the task onto its Job row."""
    if not _is_job_id(job_id):
        return
    now = timezone.now()
    jobs = Job.objects.using(using).filter(pk=job_id)
    if celery_state == states.SUCCESS:
        jobs.update(status=JobStatus.SUCCESS, finished_at=now, progress=100, error="")
    elif celery_state == states.FAILURE:
        jobs.update(status=JobStatus.FAILURE, finished_at=now, error=error_summary(result))
    elif celery_state == states.RETRY:
        # A clean hand-back to the broker: deliveries start counting again.
        jobs.update(status=JobStatus.RETRYING, deliveries=0, error=error_summary(result))
    elif celery_state == states.REVOKED:
        jobs.update(status=JobStatus.REVOKED, finished_at=now, error="Cancelled.")
