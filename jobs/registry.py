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


def _is_job_task(task) -> bool:
    # JobTask.is_job_task, read by name: the task class's module imports the
    # services, which import this one, so this one must not import it.
    return getattr(task, "is_job_task", False) is True


def job_tasks() -> dict[str, JobTask]:
    _import_task_modules()
    return {name: task for name, task in sorted(current_app.tasks.items()) if _is_job_task(task)}


def get_job_task(name: str) -> JobTask:
    # One lookup, not job_tasks(): every enqueue and publish asks, and
    # building the sorted dict of every task each time cost more than that.
    _import_task_modules()
    task = current_app.tasks.get(name)
    if not _is_job_task(task):
        raise UnknownTask(f"No job task named {name!r}.")
    return task


def public_job_tasks() -> dict[str, JobTask]:
    return {name: task for name, task in job_tasks().items() if task.public}
