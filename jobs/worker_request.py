"""The request of a job task in the worker's main process (Celery's Request,
selected by JobTask.Request), with one addition: when the worker child
running a job dies (a crash, an out-of-memory kill, a poison message), the
main process writes the job's start before the message goes back to the
queue, if the child had not written it yet.

A worker child defers a job's start to its end statement (jobs.starts): a
child that dies in the job's first JOBS_START_RECORD_DELAY_MS leaves no
trace of the delivery. Counted here instead, the delivery still counts
towards MAX_DELIVERIES (a poison message is DEAD after as many starts as
before) and the job shows as STARTED by its worker, as it did. Only a
row that does not show the job running is written: a start the child or
its watcher wrote is not counted twice. If the whole worker dies (its main
process too), nothing is written, and that delivery is not counted: the
poison bound then allows one delivery more.
"""

import logging
import time
from datetime import UTC, datetime

from celery.exceptions import WorkerLostError
from celery.worker.request import Request
from django.db import DatabaseError, connections

from jobs import end_batches, worker_prefetch
from jobs.models import JobStatus
from jobs.starts import Start
from jobs.tracking import is_job_id, job_mark_running
from upstream.celery import check_request_stop_flags, stopped_by_the_worker

logger = logging.getLogger(__name__)

check_request_stop_flags()

# The statuses of a job whose current start nobody wrote: a start written
# by the child, its watcher or job_mark_started made it STARTED.
_NOT_SHOWN_RUNNING = (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RETRYING)


class JobRequest(Request):
    def acknowledge(self):
        # Every message of a job that ran is acknowledged here (success,
        # failure, retry): its run time decides how many messages the worker
        # holds (jobs.worker_prefetch).
        if self.time_start:
            worker_prefetch.job_ended(time.time() - self.time_start)
        # A job whose end its child handed to this process: acknowledged
        # once that end is written (jobs.end_batches).
        if not end_batches.hold(self):
            super().acknowledge()

    def acknowledge_now(self):
        super().acknowledge()

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False):
        exc = getattr(exc_info.exception, "exc", exc_info.exception)  # unwrap ExceptionWithTraceback
        child_died = isinstance(exc, WorkerLostError | SystemExit | KeyboardInterrupt)
        if child_died:
            end_batches.forget(self.id)
        if child_died and self.time_start and not stopped_by_the_worker(self):
            self._write_start_of_lost_child()
        return super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)

    def _write_start_of_lost_child(self) -> None:
        if not is_job_id(self.id):
            return
        start = Start(
            job_id=self.id,
            worker=self.hostname or "",
            started_at=datetime.fromtimestamp(self.time_start, tz=UTC),
            due=0,
        )
        try:
            job_mark_running(start, statuses=_NOT_SHOWN_RUNNING)
        except DatabaseError as exc:
            logger.warning("Could not count the delivery of job %s, whose worker child died: %s", self.id, exc)
        finally:
            # The main process runs no task: it keeps no connection open for this
            # (only for the ends it writes, jobs.end_batches, which reopens it).
            connections.close_all()
