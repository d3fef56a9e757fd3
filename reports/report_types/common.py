"""Parameters and filtering shared by the reports over jobs."""

from typing import Any

from django.db.models import QuerySet

from jobs.models import Job
from jobs.queues import Queue
from reports.params import Choice, DateRange, Text


def job_filter_params(*, max_days: int) -> dict:
    return {
        "period": DateRange(max_days=max_days, help="Jobs created in these days (the project's time zone)."),
        "task": Text(help="Only jobs of this task, e.g. reports.report_generate."),
        "queue": Choice([queue.value for queue in Queue], help="Only jobs on this queue."),
    }


def filtered_jobs(params: dict[str, Any]) -> QuerySet[Job]:
    period = params["period"]
    # created_at is indexed: the range is an index scan, in order.
    jobs = Job.objects.filter(created_at__gte=period.start, created_at__lt=period.end)
    if "task" in params:
        jobs = jobs.filter(task_name=params["task"])
    if "queue" in params:
        jobs = jobs.filter(queue=params["queue"])
    if "status" in params:
        jobs = jobs.filter(status__in=params["status"])
    return jobs
