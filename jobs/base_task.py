"""The base class every tracked task uses, and the decorator that applies it.

    @job_task(name="media_tasks.renditions_create", queue=Queue.IMAGES,
              transient_errors=(TransientError,))
    def renditions_create(self, image_id: str) -> dict:
        self.progress(10, "decoding")
        ...

`self.progress(percent, message)` reports progress; raise jobs.exceptions.
BadInput for input that can never work (fails at once, no retry); the
`transient_errors` are retried with the kit's backoff and jitter; anything
else fails the job.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence

from celery import Task, shared_task
from celery.exceptions import Ignore, Reject
from celery.result import AsyncResult
from django.db import InterfaceError, OperationalError

from jobs import starts
from jobs.exceptions import BadInput, UnsupportedOption
from jobs.models import Job
from jobs.queues import DEFAULT_RETRY_POLICY, MAX_PRIORITY, PRIORITY_VALUE, Priority, Queue, RetryPolicy
from jobs.services import job_enqueue
from jobs.tracking import StartOutcome, job_mark_started

# How long a worker child that cannot reach the database waits before it
# hands the job it received back to the broker.
DATABASE_DOWN_PAUSE_SECONDS = 1.0
# The 28 binary digits Celery's native delayed delivery puts before the
# routing key of a message it delays (kombu.transport.native_delayed_delivery).
_DELAY_PREFIX = re.compile(r"^(?:[01]\.){28}")


class JobTask(Task):
    # How jobs.registry tells tracked tasks from plain Celery ones.
    is_job_task = True
    # May be enqueued over the HTTP API by a user with jobs.add_job.
    public: bool = False
    # Called with this task's new Job rows, in the transaction that inserts
    # them, however they are created (one, many, a retry): how a domain
    # object (an image, a report run) keeps pointing at its newest job.
    # Declared with job_task(on_created=...).
    on_created: Callable[[Sequence[Job]], None] | None = None
    # f(*args, **kwargs) raising BadInput for values the task must not take
    # (a sleep of a year): the API answers 400 with it, and the worker fails
    # a job that got past it (enqueued from code) before running it.
    argument_check = None
    # Expected in normal operation: Celery logs the failure in one line,
    # without a traceback (jobs.log_filters shows it as a WARNING). The
    # traceback is still stored with the result, for staff.
    throws = (BadInput,)
    # In the worker's main process: the start of a job whose worker child
    # died before writing it is written then (jobs.worker_request).
    Request = "jobs.worker_request:JobRequest"

    def __call__(self, *args, **kwargs):
        request = self.request
        if request.id and not request.is_eager:
            if starts.deferrable(request):
                # The common path: the end statement writes the start too
                # (jobs.starts says when it is written sooner).
                starts.defer_start(job_id=request.id, worker=request.hostname or "")
            else:
                self._start_now(request)
        if self.argument_check is not None:
            self.argument_check(*args, **kwargs)
        return self.run(*args, **kwargs)

    def _start_now(self, request) -> None:
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

    def signature_from_request(self, request=None, args=None, kwargs=None, queue=None, **extra_options):
        """A retry goes back to the queue its message came from. Celery finds
        it for a direct exchange (classic mode) by itself; on the quorum
        mode's topic exchange it would fall back to the task's own `queue`
        (a kit queue, not one of its priority lanes) and declare a stray
        queue of that name. The lane is the delivery's routing key, without
        the delay prefix native delayed delivery adds to a retried message."""
        request = self.request if request is None else request
        routing_key = (request.delivery_info or {}).get("routing_key") or ""
        lane = _DELAY_PREFIX.sub("", routing_key, count=1)
        if queue is None and lane in self.app.amqp.queues:
            queue = lane
        return super().signature_from_request(request, args, kwargs, queue=queue, **extra_options)

    def progress(self, percent: int, message: str = "") -> None:
        """Record how far the job is (0-100) and what it is doing now."""
        if self.request.id:
            starts.report_progress(job_id=self.request.id, percent=percent, message=message)

    def apply_async(self, args=None, kwargs=None, task_id=None, **options):
        # Celery's own republishing (retries) passes the job's id: let it
        # through. Anything else (`task.delay()` in user code, beat) becomes a
        # tracked job, so no JobTask ever runs without a Job row. Options are
        # honoured (countdown, eta, priority, queue) or refused: a job that
        # silently runs at another priority or on another queue is a bug
        # nobody sees.
        if task_id is not None:
            if not _is_republish_of_a_job(task_id):
                raise UnsupportedOption(CANVAS_REFUSAL.format(task=self.name))
            return super().apply_async(args, kwargs, task_id=task_id, **options)
        job = job_enqueue(
            task_name=self.name, args=list(args or ()), kwargs=dict(kwargs or {}), **_job_options(self.name, options)
        )
        return AsyncResult(str(job.id), app=self.app)


# Chains, groups and chords publish their tasks with ids of their own and
# keep the links in the message, where the Job row cannot follow them (a
# retry from the admin would lose the rest of the chain).
CANVAS_REFUSAL = (
    "{task} is a tracked job task: chains, groups and chords of kit tasks are refused (they would run untracked). "
    "Enqueue each job with jobs.services.enqueue (the next step of a chain from the end of the task before it), "
    "or many at once with jobs.services.job_enqueue_many."
)
_CANVAS_OPTIONS = ("link", "link_error", "chain", "chord", "group_id", "group_index")
# Options that say nothing about the job: how to publish (the kit publishes
# on commit, with its own connection and retry policy) or beat's own marks.
_PUBLISHING_OPTIONS = ("producer", "connection", "retry", "retry_policy", "add_to_parent", "router", "route_name")
_BEAT_HEADERS = {"celery_beat_task", "periodic_task_name"}


def _is_republish_of_a_job(task_id) -> bool:
    return Job.objects.filter(pk=task_id).exists()


def _job_priority(value) -> Priority:
    """A kit priority name, or a Celery number (0-9, higher first) mapped to
    the nearest kit level."""
    if isinstance(value, str) and value in {level.value for level in Priority}:
        return Priority(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_PRIORITY:
        return min(PRIORITY_VALUE, key=lambda level: abs(PRIORITY_VALUE[level] - value))
    choices = ", ".join(p.value for p in Priority)
    raise UnsupportedOption(f"priority={value!r}: use one of {choices}, or a number from 0 to {MAX_PRIORITY}.")


def _job_queue(value) -> Queue:
    name = getattr(value, "name", value)  # a kombu Queue or its name
    try:
        return Queue(name)
    except ValueError:
        raise UnsupportedOption(
            f"queue={name!r} is not a kit queue; use one of {', '.join(q.value for q in Queue)} (jobs/queues.py)."
        ) from None


def _job_options(task_name: str, options: dict) -> dict:
    """job_enqueue's keyword arguments for apply_async's (and beat's)
    options; UnsupportedOption for one the kit cannot honour."""
    honoured = {}
    for option, value in options.items():
        if option in ("countdown", "eta"):
            honoured[option] = value
        elif option == "priority":
            if value is not None:
                honoured["priority"] = _job_priority(value)
        elif option == "queue":
            if value is not None:
                honoured["queue"] = _job_queue(value)
        elif option in _CANVAS_OPTIONS:
            if value:
                raise UnsupportedOption(CANVAS_REFUSAL.format(task=task_name))
        elif option in _PUBLISHING_OPTIONS or (option in ("exchange", "routing_key") and value is None):
            continue
        elif option == "headers":
            if unknown := set(value or {}) - _BEAT_HEADERS:
                raise UnsupportedOption(
                    f"{task_name}: headers {sorted(unknown)} are not kept on a job; "
                    "pass what the task needs as arguments."
                )
        elif option == "serializer" and value == "json":
            continue
        else:
            raise UnsupportedOption(
                f"{task_name}: option {option}={value!r} cannot be honoured for a tracked job "
                "(honoured: countdown, eta, priority, queue). "
                "Expiry: cancel the job (jobs.services.job_cancel) or check the time in the task; "
                "time limits: set them on the task (@job_task(..., time_limit=...))."
            )
    return honoured


def job_task(
    *,
    name: str,
    queue: Queue = Queue.DEFAULT,
    transient_errors: tuple[type[BaseException], ...] = (),
    public: bool = False,
    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    on_created: Callable[[Sequence[Job]], None] | None = None,
    argument_check=None,
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
        # A plain function would become a method of the task class.
        on_created=staticmethod(on_created) if on_created else None,
        argument_check=staticmethod(argument_check) if argument_check else None,
        autoretry_for=transient_errors,
        max_retries=retry_policy.max_retries,
        retry_backoff=retry_policy.backoff_seconds,
        retry_backoff_max=retry_policy.backoff_max_seconds,
        retry_jitter=retry_policy.jitter,
        **celery_options,
    )
