"""The base class every tracked task uses, and the decorator that applies it.

    @job_task(name="media_tasks.thumbnail_create", queue=Queue.IMAGES,
              transient_errors=(OSError,), public=True)
    def thumbnail_create(self, image_id: int) -> dict:
        self.progress(10, "decoding")
        ...

`self.progress(percent, message)` reports progress; raise jobs.exceptions.
BadInput for input that can never work (fails at once, no retry); the
`transient_errors` are retried with the kit's backoff and jitter; anything
else fails the job.
"""

import time

from celery import Task, shared_task
from celery.exceptions import Ignore, Reject
from celery.result import AsyncResult
from django.db import InterfaceError, OperationalError

from jobs.exceptions import BadInput
from jobs.queues import DEFAULT_RETRY_POLICY, Queue, RetryPolicy
from jobs.tracking import StartOutcome, job_mark_started, job_report_progress

# How long a worker child that cannot reach the database waits before it
# hands the job it received back to the broker.
DATABASE_DOWN_PAUSE_SECONDS = 1.0


class JobTask(Task):
    # May be enqueued over the HTTP API by a user with jobs.add_job.
    public: bool = False
    # Expected in normal operation: Celery logs the failure in one line,
    # without a traceback (jobs.log_filters shows it as a WARNING). The
    # traceback is still stored with the result, for staff.
    throws = (BadInput,)

    def __call__(self, *args, **kwargs):
        request = self.request
        if request.id and not request.is_eager:
            try:
                outcome = job_mark_started(job_id=request.id, worker=request.hostname or "")
            except (OperationalError, InterfaceError) as exc:
                # The database is down. Failing the task would get its message
                # acknowledged with nothing recorded (the job QUEUED forever):
                # hand it back to the broker instead, after a pause, so an
                # outage is a trickle of redeliveries, not a race through the
                # queue. It runs once the database is back.
                time.sleep(DATABASE_DOWN_PAUSE_SECONDS)
                raise Reject(exc, requeue=True) from exc
            if outcome is StartOutcome.SKIP:
                # Cancelled, dead, or a redelivered copy of a finished job.
                raise Ignore()
        return self.run(*args, **kwargs)

    def progress(self, percent: int, message: str = "") -> None:
        """Record how far the job is (0-100) and what it is doing now."""
        if self.request.id:
            job_report_progress(job_id=self.request.id, percent=percent, message=message)

    def apply_async(self, args=None, kwargs=None, task_id=None, **options):
        # Celery's own republishing (retries) passes the job's id: let it
        # through. Anything else (`task.delay()` in user code, beat) becomes a
        # tracked job, so no JobTask ever runs without a Job row.
        if task_id is not None:
            return super().apply_async(args, kwargs, task_id=task_id, **options)
        from jobs.services import job_enqueue

        job = job_enqueue(
            task_name=self.name,
            args=list(args or ()),
            kwargs=dict(kwargs or {}),
            countdown=options.get("countdown"),
            eta=options.get("eta"),
        )
        return AsyncResult(str(job.id), app=self.app)


def job_task(
    *,
    name: str,
    queue: Queue = Queue.DEFAULT,
    transient_errors: tuple[type[BaseException], ...] = (),
    public: bool = False,
    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    **celery_options,
):
    """Declare a tracked task. Name it explicitly ("app.entity_action"): the
    name is stored on Job rows and replayed by retries, so it must not move
    when the module does."""
    return shared_task(
        name=name,
        base=JobTask,
        bind=True,
        queue=queue.value,
        public=public,
        autoretry_for=transient_errors,
        max_retries=retry_policy.max_retries,
        retry_backoff=retry_policy.backoff_seconds,
        retry_backoff_max=retry_policy.backoff_max_seconds,
        retry_jitter=retry_policy.jitter,
        **celery_options,
    )
