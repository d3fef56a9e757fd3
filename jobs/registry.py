"""Which tracked tasks exist, read by the API, the admin and the services.

Every task declared with @job_task is registered with Celery under its
explicit name; this module is the one place that looks them up.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from celery import current_app

from jobs.exceptions import UnknownTask

if TYPE_CHECKING:
    from jobs.base_task import JobTask


@cache
def _import_task_modules() -> None:
    # Workers import every app's tasks.py at start; the web process and
    # management commands do it here, the first time a task is looked up.
    current_app.loader.import_default_modules()


def job_tasks() -> dict[str, JobTask]:
    _import_task_modules()
    tasks = current_app.tasks
    # JobTask.is_job_task, read by name: the task class's module imports the
    # services, which import this one, so this one must not import it.
    return {name: task for name, task in sorted(tasks.items()) if getattr(task, "is_job_task", False) is True}


def get_job_task(name: str) -> JobTask:
    task = job_tasks().get(name)
    if task is None:
        raise UnknownTask(f"No job task named {name!r}.")
    return task


def public_job_tasks() -> dict[str, JobTask]:
    return {name: task for name, task in job_tasks().items() if task.public}
