"""Every job matching a filter, one row each: the export to hand to a
spreadsheet or another system."""

from typing import Any

from django.db.models import QuerySet

from jobs.models import JobStatus
from reports.params import Choice
from reports.registry import Column, ReportType, register
from reports.report_types.common import filtered_jobs, job_filter_params
from reports.sql import SecondsBetween


@register
class JobsExport(ReportType):
    name = "jobs.export"
    title = "Jobs"
    description = (
        "Every job created in the period, with its timings and error, optionally filtered by status, task and queue."
    )
    # Every user's jobs, arguments aside: the same right as the job admin.
    permission = "jobs.view_job"
    params = {
        **job_filter_params(max_days=366),
        "status": Choice(JobStatus.values, many=True, help="Only jobs in these states."),
    }
    columns = [
        Column("id", "Job id", width=2.5),
        Column("task_name", "Task", width=2.1),
        Column("queue", "Queue", width=0.8),
        Column("priority", "Priority", width=0.7),
        Column("status", "Status", width=0.9),
        Column("attempts", "Attempts", width=0.8),
        Column("created_at", "Created", width=1.6),
        Column("queued_at", "Queued", width=1.6),
        Column("started_at", "Started", width=1.6),
        Column("finished_at", "Finished", width=1.6),
        Column("wait_seconds", "Wait (s)", width=0.7),
        Column("runtime_seconds", "Runtime (s)", width=0.8),
        Column("requested_by", "Requested by", source="requested_by__username", width=1.0),
        Column("error", "Error", width=2.5),
    ]

    def rows(self, params: dict[str, Any]) -> QuerySet:
        return (
            filtered_jobs(params)
            .annotate(
                wait_seconds=SecondsBetween("queued_at", "started_at"),
                runtime_seconds=SecondsBetween("started_at", "finished_at"),
            )
            # Oldest first, id breaking ties: the same rows come out in the
            # same order every run.
            .order_by("created_at", "id")
            .values_list(*(column.path for column in self.columns))
        )
