"""When a worker child writes that a job started.

Tracking a job took two statements: STARTED as the task began, the outcome
as it ended. Most jobs end within a fraction of a second, and then the first
statement told nobody anything the second could not: so on the common path
the start is deferred, and the end statement writes it (jobs.backend, with
jobs.tracking.job_update_sql), with the time the job really started. One
statement per job instead of two: the throughput benchmark's kit against
its kit-start-at-once variant measures what that saves (BENCHMARKS.md).

The start is written as it happens where it matters (DESIGN.md's
invariants):
- a redelivered message (its worker died, or handed it back): its delivery
  is counted before it runs, so a poison message is DEAD after
  MAX_DELIVERIES (jobs.tracking.job_mark_started, told that the earlier
  delivery may have gone uncounted);
- a job still running JOBS_START_RECORD_DELAY_MS after it began: a watcher
  thread in the worker child writes STARTED then, so a running job shows as
  running within about a second, and a worker that dies mid-job leaves it
  STARTED for the reaper (jobs.maintenance);
- a job that reports progress, or a Django task that takes a context (its
  `attempt` is read from the row): its start is written first;
- where the end is not one statement (SQLite, the embedded default), or
  the delay is 0: at once, as before.

What the deferred start gives up is the row's say on whether a first
delivery runs at all. A job cancelled while queued is kept from running by
Celery's revoke broadcast, and, for a worker that was not connected when it
was sent, by the cancelled jobs it loads from the database whenever its
consumer starts (jobs.worker_consumer.CancelledJobs). A job published twice
(the relay's copy of a job whose QUEUED was forgotten) may run twice, as any
at-least-once delivery may: tasks are idempotent (invariant 2).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connections, router
from django.utils import timezone

from jobs.models import Job, JobStatus
from jobs.tracking import is_job_id, job_mark_running, job_report_progress

logger = logging.getLogger(__name__)

# How often the watcher thread looks at the running job: its start is written
# between JOBS_START_RECORD_DELAY_MS and that plus this after it began.
WATCH_SECONDS = 0.1


@dataclass
class Start:
    """A job's start that its worker child has not written yet."""

    job_id: str
    worker: str
    started_at: datetime
    # time.monotonic() at which the watcher writes it if the job still runs.
    due: float
    # Set while a thread writes it, so the job's end statement waits for
    # that write instead of racing it.
    writing: bool = False


def deferrable(request) -> bool:
    """Whether this delivery's start may wait for its end statement."""
    return (
        settings.JOBS_START_RECORD_DELAY_MS > 0
        and not (request.delivery_info or {}).get("redelivered")
        and _end_is_one_statement(router.db_for_write(Job))
        and is_job_id(request.id)
    )


@functools.cache
def _end_is_one_statement(alias: str) -> bool:
    # PostgreSQL's data-modifying WITH (jobs.backend); looked up once, as
    # it is asked for every job.
    return connections[alias].vendor == "postgresql"


class _Recorder:
    """The one job a worker child runs at a time (prefork), and the thread
    that writes its start if it runs long. Created lazily in each child: a
    thread does not survive fork.

    The thread looks every WATCH_SECONDS instead of being woken for each job:
    handing a job to it and back cost the child more than the statement it
    saves."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._written = threading.Condition(self._lock)
        self._start: Start | None = None
        self._watcher = threading.Thread(target=self._watch, name="jobs-start-recorder", daemon=True)
        self._watcher.start()

    def defer(self, start: Start) -> None:
        with self._lock:
            self._start = start

    def take(self, job_id: str) -> Start | None:
        """The job's start, for its end statement to write; None if it has
        been written (or was never deferred). Waits while the watcher writes it."""
        with self._lock:
            if (start := self._unwritten(job_id)) is not None:
                self._start = None
        return start

    def give_back(self, start: Start) -> None:
        with self._lock:
            if self._start is None:
                start.due = float("inf")  # the end statement's retry writes it
                self._start = start

    def write_now(self, job_id: str) -> bool:
        """Write the job's deferred start now, from the calling thread;
        False if it could not be written."""
        with self._lock:
            if (start := self._unwritten(job_id)) is None:
                return True
            start.writing = True
        return self._write(start)

    def _unwritten(self, job_id: str) -> Start | None:
        """The job's deferred start, once no thread is writing it; None if
        it has been written. Called with the lock held."""
        while self._start is not None and self._start.writing:
            self._written.wait()
        return self._start if self._start is not None and self._start.job_id == job_id else None

    def _write(self, start: Start) -> bool:
        written = False
        try:
            job_mark_running(start)
            written = True
        except DatabaseError as exc:
            # The end statement writes it instead (or, if the database stays
            # down, the job is redelivered and started anew).
            logger.warning("Could not write the start of job %s yet: %s", start.job_id, exc)
        finally:
            with self._lock:
                start.writing = False
                if written and self._start is start:
                    self._start = None
                elif not written:
                    start.due = float("inf")
                self._written.notify_all()
        return written

    def _watch(self) -> None:
        while True:
            time.sleep(WATCH_SECONDS)
            with self._lock:
                start = self._start
                if start is None or start.writing or start.due > time.monotonic():
                    continue
                start.writing = True
            self._write(start)
            # The watcher's own connection (Django's are per thread), opened
            # for long jobs only: closed again, rather than doubling the
            # connections every worker child holds.
            connections.close_all()


_recorder: _Recorder | None = None


def _the_recorder() -> _Recorder:
    global _recorder
    if _recorder is None or _recorder._pid != os.getpid():
        _recorder = _Recorder()
    return _recorder


def defer_start(*, job_id: str, worker: str) -> None:
    """Leave the job's start to its end statement, or to the watcher if it
    runs longer than JOBS_START_RECORD_DELAY_MS."""
    delay = settings.JOBS_START_RECORD_DELAY_MS / 1000
    _the_recorder().defer(Start(job_id=job_id, worker=worker, started_at=timezone.now(), due=time.monotonic() + delay))


def take_deferred_start(job_id: str) -> Start | None:
    """For the job's end statement: its start, if still unwritten."""
    return _recorder.take(job_id) if _recorder is not None and _recorder._pid == os.getpid() else None


def give_back_deferred_start(start: Start) -> None:
    """The end statement that took `start` failed: it is unwritten again."""
    if _recorder is not None and _recorder._pid == os.getpid():
        _recorder.give_back(start)


def task_ended(job_id: str) -> None:
    """After the task's end (Celery's task_postrun): a start still unwritten
    had no end statement to carry it (the result could not be stored, or
    the task handed its message back), so it is written now, and the job
    shows as STARTED, as a job whose worker stopped mid-way does, for the
    reaper or the next delivery.

    If that fails too, the database has been unreachable for as long as
    the result backend retried (CELERY_RESULT_BACKEND_MAX_RETRIES), and the
    row would stay QUEUED, its message acknowledged: nothing would ever run
    or reap it. The worker child exits instead, before the acknowledgement,
    so the message goes back to the queue (task_reject_on_worker_lost), and
    its redelivery waits for the database (jobs.base_task) and runs again."""
    if not write_start_now(job_id):
        logger.error(
            "Job %s ran, but neither its start nor its end could be written to the database: this worker "
            "child exits so that the job's message goes back to the queue instead of being acknowledged.",
            job_id,
        )
        os._exit(1)


def write_start_now(job_id: str) -> bool:
    """Write the running job's deferred start now, for a reader that needs
    the row as it is while the job runs (its attempts, its status); False if
    it could not be written."""
    if _recorder is not None and _recorder._pid == os.getpid():
        return _recorder.write_now(job_id)
    return True


def report_progress(*, job_id: str, percent: int, message: str = "") -> None:
    """Record how far a running job is; its deferred start is written first,
    so a job that reports progress is STARTED, with its progress."""
    write_start_now(job_id)
    job_report_progress(job_id=job_id, percent=percent, message=message)


def cancelled_before_start() -> list[str]:
    """Ids of the jobs cancelled before they started, within the time a
    worker remembers a revoke (Celery's CELERY_WORKER_REVOKE_EXPIRES):
    what a worker that was not listening when they were cancelled must not
    run (jobs.worker_consumer.CancelledJobs)."""
    from celery.worker.state import REVOKE_EXPIRES

    since = timezone.now() - timedelta(seconds=REVOKE_EXPIRES)
    cancelled = Job.objects.filter(status=JobStatus.REVOKED, started_at__isnull=True, finished_at__gte=since)
    return [str(pk) for pk in cancelled.values_list("pk", flat=True)]
