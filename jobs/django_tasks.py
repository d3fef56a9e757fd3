"""Django's Tasks API, run by the kit.

    TASKS = {"default": {"BACKEND": "jobs.django_tasks.KitBackend"}}

    @task(priority=10, queue_name="email")
    def welcome_send(user_id: int) -> dict: ...

    welcome_send.enqueue(user.id)   # a Job, published once the transaction commits

The same code runs on Django 6's `django.tasks` and on the `django-tasks`
backport (Django 4.2 to 5.2), whichever this Django has.

How a `@task` maps onto a job (README, "Django's Tasks API"):
- `.enqueue()` is `jobs.services.job_enqueue`: a Job row in the caller's
  transaction, published after the commit with publisher confirms, the
  outbox relay behind it;
- the Job's task name is the function's module path, registered with Celery
  as a JobTask under that name when the function is decorated, so workers
  run it with the kit's guarantees (late acks, delivery counting, time
  limits, retries) and a retry from the admin replays it;
- priority -100..100 becomes high / medium / low (`kit_priority`),
  `queue_name` a kit queue, `run_after` the job's eta;
- `get_result(id)` reads the Job (and its Celery result for return values
  and tracebacks).
"""

from dataclasses import dataclass
from functools import cache
from typing import Any

from celery import current_app
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.utils.module_loading import import_string

from jobs import starts
from jobs.base_task import job_task
from jobs.exceptions import TransientError
from jobs.models import Job, JobStatus
from jobs.queues import DEFAULT_RETRY_POLICY, Priority, Queue, RetryPolicy
from jobs.services import job_enqueue

try:  # Django 6.0 and later
    from django.tasks import TaskContext, TaskResult, TaskResultStatus
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import TASK_REFRESH_ATTRS, Task, TaskError
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued
    from django.utils.json import normalize_json
except ImportError:  # Django 4.2 to 5.2: the django-tasks backport
    from django_tasks import TaskContext, TaskResult, TaskResultStatus
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import TASK_REFRESH_ATTRS, Task, TaskError
    from django_tasks.exceptions import InvalidTaskError as InvalidTask
    from django_tasks.exceptions import TaskResultDoesNotExist
    from django_tasks.signals import task_enqueued
    from django_tasks.utils import normalize_json

__all__ = [
    "InvalidTask",
    "KitBackend",
    "KitTaskContext",
    "KitTaskResult",
    "TaskResultDoesNotExist",
    "kit_priority",
    "transient_errors",
]


def kit_priority(priority: int) -> Priority:
    """Django's priority (-100..100, default 0, higher first) as one of the
    kit's three: above 0 is high, 0 is medium, below 0 is low.

    The cut points sit at the default so that any priority a task sets moves
    it ahead of (or behind) the default work; the order among, say, 10 and
    90 is lost, as three RabbitMQ levels cannot keep two hundred."""
    if priority > 0:
        return Priority.HIGH
    if priority < 0:
        return Priority.LOW
    return Priority.MEDIUM


# What get_result reports as a Task's priority when the decorated one is of
# another level (the Job keeps the level, not the number).
_PRIORITY_OF_LEVEL = {Priority.HIGH: 1, Priority.MEDIUM: 0, Priority.LOW: -1}

_DJANGO_STATUS = {
    JobStatus.PENDING: TaskResultStatus.READY,
    JobStatus.QUEUED: TaskResultStatus.READY,
    JobStatus.RETRYING: TaskResultStatus.READY,  # "ready to be executed again"
    JobStatus.STARTED: TaskResultStatus.RUNNING,
    JobStatus.SUCCESS: TaskResultStatus.SUCCESSFUL,
    JobStatus.FAILURE: TaskResultStatus.FAILED,
    JobStatus.REVOKED: TaskResultStatus.FAILED,
    JobStatus.DEAD: TaskResultStatus.FAILED,
    JobStatus.LOST: TaskResultStatus.FAILED,
}


class JobCancelled(Exception):
    """A Django task whose job was cancelled (REVOKED); the error class get_result names."""


class JobDead(Exception):
    """A Django task whose worker died on every delivery (DEAD)."""


class JobLost(Exception):
    """A Django task whose worker vanished (LOST)."""


_ENDED_WITHOUT_EXCEPTION = {JobStatus.REVOKED: JobCancelled, JobStatus.DEAD: JobDead, JobStatus.LOST: JobLost}


def transient_errors(*errors: type[BaseException], retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY):
    """Declare which errors of a Django task are worth retrying, under @task:

        @task(queue_name="email")
        @transient_errors(smtplib.SMTPServerDisconnected, ConnectionError)
        def welcome_send(user_id): ...

    They are retried with the kit's backoff and jitter (`retry_policy`), as
    `@job_task(transient_errors=...)` does. jobs.exceptions.TransientError is
    retried without being listed; BadInput fails at once; anything else
    fails the job. Django's @task takes no options of its own for this, so
    the function carries them."""

    def mark(func):
        func.kit_transient_errors = errors
        func.kit_retry_policy = retry_policy
        return func

    return mark


@dataclass(frozen=True, slots=True, kw_only=True)
class KitTaskResult(TaskResult):
    """Django's TaskResult, plus what the Job knows beyond it.

    `attempts` is the Job's count of starts (every delivery and every
    retry). Django counts `worker_ids` instead, but the Job records only the
    worker of the latest attempt, so `worker_ids` holds that one."""

    job_attempts: int = 0
    job_status: str = ""
    progress: int = 0
    progress_message: str = ""

    @property
    def attempts(self) -> int:
        return self.job_attempts

    def refresh(self) -> None:
        self._copy_from(self.task.get_backend().get_result(self.id))

    async def arefresh(self) -> None:
        self._copy_from(await self.task.get_backend().aget_result(self.id))

    def _copy_from(self, other: "KitTaskResult") -> None:
        for attr in (*TASK_REFRESH_ATTRS, "job_attempts", "job_status", "progress", "progress_message"):
            object.__setattr__(self, attr, getattr(other, attr))


@dataclass(frozen=True, slots=True, kw_only=True)
class KitTaskContext(TaskContext):
    """What a `takes_context` task receives: Django's context (`attempt`,
    `task_result`), the job id, whether a transient error now would still
    be retried, and progress reporting."""

    # Retries of declared transient errors so far, and how many are allowed
    # (the task's RetryPolicy). `attempt` also counts redeliveries after a
    # crash, so it cannot tell when the retries run out.
    retries: int = 0
    max_retries: int = 0

    @property
    def job_id(self) -> str:
        return self.task_result.id

    @property
    def final_attempt(self) -> bool:
        """True when a transient error now fails the job instead of retrying
        it: the time to give up cleanly (mark a message failed, release a claim)."""
        return self.retries >= self.max_retries

    def progress(self, percent: int, message: str = "") -> None:
        """Record how far the job is (0-100): shown by the API and the admin."""
        starts.report_progress(job_id=self.job_id, percent=percent, message=message)


# Module path -> the decorated Task, for every Django task run by the kit in
# this process.
_DJANGO_TASKS: dict[str, Task] = {}


def _register_with_celery(task: Task) -> None:
    """Make the task's module path a JobTask the workers can run.

    Called when the function is decorated: a worker imports every app's
    tasks.py (and CELERY_IMPORTS) at start, so it knows the name before any
    message arrives. One registration per function; `.using()` copies share it.
    """
    path = task.module_path
    if path in _DJANGO_TASKS:
        return
    _DJANGO_TASKS[path] = task
    func = task.func

    def run(celery_task, *args, **kwargs):
        return _run(celery_task, task, args, kwargs)

    run.__module__, run.__qualname__, run.__doc__ = func.__module__, func.__qualname__, func.__doc__
    job_task(
        name=path,
        queue=Queue(task.queue_name),
        transient_errors=(TransientError, *getattr(func, "kit_transient_errors", ())),
        retry_policy=getattr(func, "kit_retry_policy", DEFAULT_RETRY_POLICY),
    )(run)


def _run(celery_task, task: Task, args: tuple, kwargs: dict) -> Any:
    """The body of a Django task in a worker."""
    if task.takes_context:
        # The context is read from the Job row: its start (and so the
        # attempt counting this one) is written first (jobs.starts).
        starts.write_start_now(celery_task.request.id)
        task_result = task.get_backend().get_result(celery_task.request.id)
        context = KitTaskContext(
            task_result=task_result,
            retries=celery_task.request.retries or 0,
            max_retries=celery_task.max_retries or 0,
        )
        value = task.call(context, *args, **kwargs)
    else:
        value = task.call(*args, **kwargs)
    # As Django's own backends store it: tuples become lists, and a value
    # that is not JSON fails the task with Django's error.
    return normalize_json(value)


@cache
def _worker_modules() -> frozenset[str]:
    """The modules every worker imports at start: each installed app's
    tasks.py (Celery's autodiscovery) and CELERY_IMPORTS / CELERY_INCLUDE."""
    conf = current_app.conf
    app_tasks = (f"{config.name}.tasks" for config in apps.get_app_configs())
    return frozenset([*conf.imports, *conf.include, *app_tasks])


class KitBackend(BaseTaskBackend):
    """Runs Django tasks as kit jobs. Configure it in TASKS; QUEUES, if
    given, must name kit queues (jobs.queues.Queue) and defaults to all."""

    supports_defer = True  # run_after: the job's eta
    supports_async_task = True  # coroutines run in the worker through async_to_sync
    supports_get_result = True  # from the Job row, in any process
    supports_priority = True  # three RabbitMQ levels (kit_priority)

    def __init__(self, alias: str, params: dict) -> None:
        super().__init__(alias, params)
        kit_queues = {queue.value for queue in Queue}
        if "QUEUES" not in params:
            self.queues = kit_queues
        elif unknown := self.queues - kit_queues:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['QUEUES'] names {sorted(unknown)}, which are not kit queues: "
                f"use some of {sorted(kit_queues)} (jobs.queues.Queue)."
            )

    def validate_task(self, task: Task) -> None:
        # Django validates every Task when it is made (decorated, or copied
        # by .using()), and the kit at enqueue: an unknown queue_name, a
        # priority out of range, a nested function fail with Django's
        # InvalidTask, before any job exists.
        super().validate_task(task)
        _register_with_celery(task)

    def enqueue(self, task: Task, args, kwargs) -> KitTaskResult:
        self.validate_task(task)
        if task.func.__module__ not in _worker_modules():
            raise InvalidTask(
                f"{task.module_path} is in {task.func.__module__}, which workers do not import at start: "
                "define @task functions in an installed app's tasks.py, or add the module to CELERY_IMPORTS."
            )
        # Django's own conversion and error for arguments that are not JSON
        # ("Unsupported type: ..."), as its backends give.
        args, kwargs = normalize_json(list(args)), normalize_json(dict(kwargs))
        job = job_enqueue(
            task_name=task.module_path,
            args=args,
            kwargs=kwargs,
            priority=kit_priority(task.priority),
            queue=task.queue_name,
            eta=task.run_after,
        )
        result = self._result(job, task)
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> KitTaskResult:
        try:
            job = Job.objects.get(pk=result_id)
        except (Job.DoesNotExist, ValidationError, ValueError):
            raise TaskResultDoesNotExist(f"No job {result_id!r}.") from None
        task = self._task_of(job)
        if task is None:
            raise TaskResultDoesNotExist(f"Job {result_id} is {job.task_name}, not a Django task.")
        return self._result(job, task)

    def _task_of(self, job: Job) -> Task | None:
        """The Django task a job runs, as it was enqueued (queue, eta, priority level)."""
        task = _DJANGO_TASKS.get(job.task_name)
        if task is None:
            try:
                task = import_string(job.task_name)  # importing it registers it
            except ImportError:
                return None
            if not isinstance(task, Task):
                return None
        level = Priority(job.priority)
        priority = task.priority if kit_priority(task.priority) == level else _PRIORITY_OF_LEVEL[level]
        return task.using(priority=priority, queue_name=job.queue, run_after=job.eta, backend=self.alias)

    def _result(self, job: Job, task: Task) -> KitTaskResult:
        status = _DJANGO_STATUS[JobStatus(job.status)]
        errors: list[TaskError] = []
        return_value = None
        if job.status in (JobStatus.SUCCESS, JobStatus.FAILURE, JobStatus.RETRYING):
            stored = job.task_result  # django-celery-results' row: value or exception, traceback
            if stored is not None:
                content = current_app.backend.decode_content(stored, stored.result)
                if job.status == JobStatus.SUCCESS:
                    return_value = content
                else:
                    errors.append(_error_from_celery(content, stored.traceback or job.error))
            elif job.status == JobStatus.FAILURE:
                errors.append(TaskError(exception_class_path="builtins.Exception", traceback=job.error))
        elif error_class := _ENDED_WITHOUT_EXCEPTION.get(JobStatus(job.status)):
            errors.append(TaskError(exception_class_path=f"{__name__}.{error_class.__name__}", traceback=job.error))
        result = KitTaskResult(
            task=task,
            id=str(job.id),
            status=status,
            enqueued_at=job.created_at,
            # The Job keeps the latest start only: both are that.
            started_at=job.started_at,
            last_attempted_at=job.started_at,
            finished_at=job.finished_at,
            args=job.args,
            kwargs=job.kwargs,
            backend=self.alias,
            errors=errors,
            worker_ids=[job.worker] if job.worker else [],
            job_attempts=job.attempts,
            job_status=job.status,
            progress=job.progress,
            progress_message=job.progress_message,
        )
        object.__setattr__(result, "_return_value", return_value)
        return result


def _error_from_celery(content, traceback: str) -> TaskError:
    """Django's TaskError from an exception as Celery stores it
    ({"exc_type", "exc_module", "exc_message"}) and its traceback."""
    if isinstance(content, dict) and content.get("exc_type"):
        module = content.get("exc_module") or "builtins"
        path = f"{module}.{content['exc_type']}"
    else:
        path = "builtins.Exception"
    return TaskError(exception_class_path=path, traceback=traceback or "")
