"""The job core's hand-written SQL: the state changes of a Job on the hot
path (the publisher's QUEUED, the worker's STARTED, progress and outcome)
and the result backend's TaskResult upsert.

These run once or twice per job, so each is one statement in one round trip
to the database, written once per shape and bound on the server: none reads
a row to write it back (DESIGN.md, invariant 6), and none opens a
transaction of its own. The ORM builds every other query of the job core;
here compiling it cost more than the database's work.
"""

import uuid
from enum import Enum

import psycopg
from celery import states
from django.conf import settings
from django.db import InterfaceError, OperationalError, connections, router
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

_DEAD_MESSAGE = (
    f"Started {MAX_DELIVERIES} times without finishing: its worker died each time "
    "(a crash, an out-of-memory kill, or a poison message). Retry it once the cause is fixed."
)


def relaxed_durability(connection) -> str:
    """A FROM item for a tracking UPDATE, so that its commit does not wait
    for the disk; empty where that must not happen.

    On PostgreSQL each commit otherwise waits for a WAL flush, which costs
    more than the rest of the tracking together. set_config(..., true) lasts
    as long as the transaction, and a statement run on its own (autocommit)
    is its own transaction: so this relaxes that one statement and nothing
    else. A crash of PostgreSQL or of its host can forget the last
    fraction of a second of status changes; it never corrupts them, and never
    touches the caller's own writes, the Job rows created at enqueue, or what
    the task itself writes. A job whose SUCCESS was forgotten shows as
    STARTED after such a crash; one whose QUEUED was forgotten (written by
    the publisher, jobs.services) is published again by the relay. Inside a transaction (a task's own) it is
    empty: the setting would reach the task's writes too. Set
    JOBS_DURABLE_TRACKING=true to wait for the disk anyway.
    """
    if (
        connection.vendor != "postgresql"
        or settings.JOBS_DURABLE_TRACKING
        or connection.in_atomic_block
        or not connection.get_autocommit()
    ):
        return ""
    return "FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed_durability"


def run_tracking_statement(build, *, using: str | None = None):
    """Run the statement `build(connection)` returns as (sql, params) and
    return its first row, if any.

    Tracking statements come first in every task, so they also stand in for
    Django's per-request health check: a connection the database dropped
    (a restart, a failover) is closed and the statement runs once more on a
    new one. Outside a transaction only; the (rare) cost is a delivery
    counted twice if the connection died just after the commit. If the new
    connection fails too, the database is down and the error is raised.
    """
    using = using or router.db_for_write(Job)
    for attempt in (1, 2):
        connection = connections[using]
        try:
            sql, params = build(connection)
            with _tracking_cursor(connection) as cursor:
                cursor.execute(sql, params)
                return cursor.fetchone() if cursor.description else None
        except (OperationalError, InterfaceError):
            if connection.in_atomic_block or connection.is_usable():
                raise
            connection.close()
            if attempt == 2:
                raise


def _tracking_cursor(connection):
    """A cursor for tracking statements. On PostgreSQL it binds parameters on
    the server instead of quoting them into the SQL in Python (Django's
    default, and about a third of what a tracking statement cost the worker).
    It is still Django's cursor wrapper, so errors, debug logging and
    CaptureQueriesContext work as for any other query. psycopg prepares
    them on their fifth run on a connection (OPTIONS["prepare_threshold"],
    config/settings/base.py), which halves what they cost PostgreSQL;
    Django's own cursors bind on the client and are never prepared."""
    if connection.vendor != "postgresql":
        return connection.cursor()
    connection.ensure_connection()
    cursor = psycopg.Cursor(connection.connection)
    return connection.make_debug_cursor(cursor) if connection.queries_logged else connection.make_cursor(cursor)


def cached_statement(connection, key: tuple, write) -> str:
    """The SQL text `write(connection)` returns, written once per database
    and `key`: tracking runs a handful of statement shapes thousands of times
    a second, and compiling them through the ORM cost more than running them.
    The relaxed/strict FROM item is part of the key, since it depends on
    whether the caller is inside a transaction."""
    key = (connection.alias, relaxed_durability(connection), *key)
    if (sql := _STATEMENTS.get(key)) is None:
        sql = _STATEMENTS[key] = write(connection)
    return sql


_STATEMENTS: dict[tuple, str] = {}


def start_assignments(*, counted: bool, source: str | None = None) -> str:
    """The SET items that record a job's start, `counted` as one delivery
    (always as one attempt): for the statement that writes a start the
    worker had deferred (jobs.starts). Their parameters: start_params; or,
    with `source`, the started_at and worker columns of that FROM item (the
    rows of a batch)."""
    counts = "deliveries = deliveries + 1, " if counted else ""
    started, worker = (f"{source}.started_at", f"{source}.worker") if source else ("%s", "%s")
    return (
        f"{counts}attempts = attempts + 1, started_at = {started}, "
        # Its publisher may mark it QUEUED after this (a race it loses
        # gracefully): a job is never queued after it started.
        f"queued_at = CASE WHEN queued_at IS NULL OR queued_at > {started} THEN {started} ELSE queued_at END, "
        f"worker = {worker}"
    )


def start_params(connection, start) -> list:
    """start_assignments' parameters for `start` (a jobs.starts.Start)."""
    at = Job._meta.get_field("started_at").get_db_prep_save(start.started_at, connection)
    return [at, at, at, start.worker[:200]]


def job_update_sql(connection, *, job_id: str, values: dict, start=None) -> tuple[str, list]:
    """UPDATE of one Job row's plain `values`, relaxed where allowed; with
    `start` (a jobs.starts.Start the worker deferred to this statement), its
    start recorded too, counted as a delivery unless `values` sets the
    deliveries itself (a retry resets them)."""
    fields = [Job._meta.get_field(name) for name in values]
    counted = "deliveries" not in values

    def write(connection):
        table = connection.ops.quote_name(Job._meta.db_table)
        assignments = ", ".join(f"{connection.ops.quote_name(field.column)} = %s" for field in fields)
        if start is not None:
            assignments += ", " + start_assignments(counted=counted)
        return f"UPDATE {table} SET {assignments} {relaxed_durability(connection)} WHERE {table}.id = %s"

    sql = cached_statement(connection, ("job_update", start is not None, *values), write)
    params = [field.get_db_prep_save(value, connection) for field, value in zip(fields, values.values(), strict=True)]
    if start is not None:
        params += start_params(connection, start)
    return sql, [*params, Job._meta.pk.get_db_prep_value(job_id, connection)]


def task_result_upsert_sql(
    connection, model, columns: list[str], update_fields: list[str], *, arrays: bool = False
) -> str:
    """INSERT ... ON CONFLICT (task_id) DO UPDATE of TaskResults (`model`)
    (PostgreSQL only): one row, a placeholder per field of `columns`; or,
    with `arrays`, any number of rows, a placeholder per field holding that
    field's values row by row (unnest; see job_successes_sql). Not the ORM's
    update_or_create: that is a locking SELECT and then a write, two round
    trips for every task that ends (jobs/backend.py)."""
    opts = model._meta
    quote = connection.ops.quote_name
    fields = [opts.get_field(name) for name in columns]
    inserted = ", ".join(quote(field.column) for field in fields)
    updates = [quote(opts.get_field(name).column) for name in update_fields]
    if arrays:
        rows = f"SELECT * FROM unnest({', '.join(f'%b::{field.db_type(connection)}[]' for field in fields)})"
    else:
        rows = f"VALUES ({', '.join(['%s'] * len(fields))})"
    return (
        f"INSERT INTO {quote(opts.db_table)} ({inserted}) {rows} "
        f"ON CONFLICT ({quote(opts.get_field('task_id').column)}) DO UPDATE SET "
        + ", ".join(f"{column} = EXCLUDED.{column}" for column in updates)
    )


def job_successes_sql(connection, ends: list) -> tuple[str, list]:
    """UPDATE of the Job rows of `ends` (jobs.end_batches.End: jobs that
    succeeded, each with the start its worker deferred to this statement) to
    SUCCESS, with their starts, in one statement, relaxed where allowed: the
    worker's main process writes a batch of them (PostgreSQL only).

    The rows come as one array per column (unnest), so that every batch
    size is the same statement: psycopg parses it once (a statement of more
    than 50 parameters, as a VALUES list of a few rows was, it parses anew
    on every run) and PostgreSQL prepares it once instead of once per size.
    The arrays go in binary (%b): in text, psycopg quotes every element with
    regular expressions. Half the main process's CPU per batch of 8
    (BENCHMARKS.md, "Levers tried")."""

    def write(connection):
        table = connection.ops.quote_name(Job._meta.db_table)
        relaxed = relaxed_durability(connection).replace("FROM ", ", ", 1)
        return (
            f"UPDATE {table} SET status = '{JobStatus.SUCCESS}', finished_at = ended.finished_at, progress = 100, "
            f"error = '', {start_assignments(counted=True, source='ended')} "
            "FROM unnest(%b::uuid[], %b::timestamptz[], %b::timestamptz[], %b::text[]) "
            f"AS ended (id, started_at, finished_at, worker){relaxed} "
            f"WHERE {table}.id = ended.id"
        )

    sql = cached_statement(connection, ("job_successes",), write)
    timestamp = Job._meta.get_field("started_at")
    params = [
        [Job._meta.pk.get_db_prep_value(end.job_id, connection) for end in ends],
        [timestamp.get_db_prep_save(end.started_at, connection) for end in ends],
        [timestamp.get_db_prep_save(end.finished_at, connection) for end in ends],
        [end.worker[:200] for end in ends],
    ]
    return sql, params


def is_job_id(task_id: str) -> bool:
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
    DEAD are not: a redelivered copy of a finished job, or a job cancelled
    while queued, is acknowledged without running.
    """
    if not is_job_id(job_id):
        return StartOutcome.UNTRACKED
    now = timezone.now()

    def write(connection):
        table = connection.ops.quote_name(Job._meta.db_table)
        runnable = ", ".join(f"'{status}'" for status in _RUNNABLE)
        # Standard SQL: every right-hand column reference reads the old row,
        # so `deliveries` here is the count before this delivery.
        dead = f"deliveries >= {MAX_DELIVERIES}"
        return f"""
            UPDATE {table} SET
                status = CASE WHEN {dead} THEN '{JobStatus.DEAD}' ELSE '{JobStatus.STARTED}' END,
                error = CASE WHEN {dead} THEN %s ELSE error END,
                finished_at = CASE WHEN {dead} THEN %s ELSE NULL END,
                deliveries = deliveries + 1,
                attempts = attempts + 1,
                started_at = %s,
                -- Its publisher may mark it QUEUED after this (a race it
                -- loses gracefully): a job is never queued after it started.
                queued_at = CASE WHEN queued_at IS NULL OR queued_at > %s THEN %s ELSE queued_at END,
                worker = %s
            {relaxed_durability(connection)}
            WHERE {table}.id = %s AND status IN ({runnable})
            RETURNING status
        """

    def build(connection):
        sql = cached_statement(connection, ("job_mark_started",), write)
        at = Job._meta.get_field("started_at").get_db_prep_save(now, connection)
        return sql, [_DEAD_MESSAGE, at, at, at, at, worker[:200], Job._meta.pk.get_db_prep_value(job_id, connection)]

    row = run_tracking_statement(build)
    if row is not None:
        return StartOutcome.RUN if row[0] == JobStatus.STARTED else StartOutcome.SKIP
    # Rare path: the row is finished/cancelled, or there is none at all.
    if Job.objects.filter(pk=job_id).exists():
        return StartOutcome.SKIP
    return StartOutcome.UNTRACKED


def job_mark_running(start, *, statuses=_RUNNABLE) -> None:
    """Write the start of a job that is running now, or was (a
    jobs.starts.Start the worker had deferred): STARTED, counted as a
    delivery, if the row's status is one of `statuses` (by default any
    runnable one: not if it has meanwhile finished or been cancelled). No
    poison check: its message was not a redelivery (those are started with
    job_mark_started)."""

    def build(connection):
        def write(connection):
            table = connection.ops.quote_name(Job._meta.db_table)
            allowed = ", ".join(f"'{status}'" for status in statuses)
            return (
                f"UPDATE {table} SET status = '{JobStatus.STARTED}', {start_assignments(counted=True)} "
                f"{relaxed_durability(connection)} WHERE {table}.id = %s AND status IN ({allowed})"
            )

        sql = cached_statement(connection, ("job_mark_running", *statuses), write)
        return sql, [*start_params(connection, start), Job._meta.pk.get_db_prep_value(start.job_id, connection)]

    run_tracking_statement(build)


def job_report_progress(*, job_id: str, percent: int, message: str = "") -> None:
    values = {"progress": max(0, min(100, int(percent))), "progress_message": message[:200]}
    run_tracking_statement(lambda connection: job_update_sql(connection, job_id=job_id, values=values))


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


def job_outcome_values(*, celery_state: str, result) -> dict | None:
    """What a state Celery stores for a task changes on its Job row (None:
    nothing, e.g. for STARTED, which job_mark_started writes)."""
    now = timezone.now()
    if celery_state == states.SUCCESS:
        return {"status": JobStatus.SUCCESS, "finished_at": now, "progress": 100, "error": ""}
    if celery_state == states.FAILURE:
        return {"status": JobStatus.FAILURE, "finished_at": now, "error": error_summary(result)}
    if celery_state == states.RETRY:
        # A clean hand-back to the broker: deliveries start counting again.
        return {"status": JobStatus.RETRYING, "deliveries": 0, "error": error_summary(result)}
    if celery_state == states.REVOKED:
        return {"status": JobStatus.REVOKED, "finished_at": now, "error": "Cancelled."}
    return None


def job_record_outcome(*, job_id: str, celery_state: str, result, using: str | None = None) -> None:
    """Mirror a state Celery stores for the task onto its Job row."""
    if is_job_id(job_id) and (values := job_outcome_values(celery_state=celery_state, result=result)):
        Job.objects.using(using).filter(pk=job_id).update(**values)


# job_mark_queued names at most this many rows per statement.
_IDS_PER_STATEMENT = 1000


def job_mark_queued(job_ids: list) -> None:
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
