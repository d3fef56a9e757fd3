"""Which tracked tasks exist, read by the API, the admin and the services.

Every task declared with @job_task is registered with Celery under its
explicit name; this module is the one place that looks them up.
"""

from functools import cache

from celery import current_app

from jobs.base_task import JobTask
from jobs.exceptions import UnknownTask


@cache
def _import_task_modules() -> None:
    # Workers import every app's tasks.py at start; the web process and
    # management commands do it here, the first time a task is looked up.
    current_app.loader.import_default_modules()


def job_tasks() -> dict[str, JobTask]:
    _import_task_modules()
    tasks = current_app.tasks
    return {name: task for name, task in sorted(tasks.items()) if isinstance(task, JobTask)}


def get_job_task(name: str) -> JobTask:
    task = job_tasks().get(name)
    if task is None:
        raise UnknownTask(f"No job task named {name!r}.")
    return task


def public_job_tasks() -> dict[str, JobTask]:
    return {name: task for name, task in job_tasks().items() if task.public}
