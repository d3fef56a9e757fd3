"""Job activity: per task and queue, per hour or day, how many jobs ran, how
they ended, and how long they ran and waited (p50 and p95).

Percentiles are computed by the database on PostgreSQL (percentile_cont);
on SQLite, the embedded default, the database sorts and Python interpolates
the same way (reports.sql.grouped_percentiles).
"""

from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import connections, router
from django.db.models import Count, Q
from django.db.models.functions import Trunc

from jobs.models import ACTIVE_STATUSES, Job, JobStatus
from reports.params import Choice, InvalidParams
from reports.registry import Chart, Column, ReportType, register
from reports.report_types.common import filtered_jobs, job_filter_params
from reports.sql import PercentileCont, SecondsBetween, grouped_percentiles

FAILED_STATUSES = (JobStatus.FAILURE, JobStatus.DEAD, JobStatus.LOST)
# 31 days of hours is 744 rows per task and a chart still worth reading.
MAX_HOURLY_DAYS = 31
FRACTIONS = (0.5, 0.95)
GROUP_BY = ("bucket", "task_name", "queue")


def percentiles_in_sql() -> bool:
    return connections[router.db_for_read(Job)].vendor == "postgresql"


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


@register
class JobActivity(ReportType):
    name = "jobs.activity"
    title = "Job activity"
    description = (
        "Per task and queue, per hour or day: jobs, successes, failures, error rate, "
        "and p50/p95 of the runtime and of the wait in the queue, in seconds."
    )
    permission = "jobs.view_job"
    params = {
        **job_filter_params(max_days=366),
        "bucket": Choice(
            ["hour", "day"], default="day", help=f"Rows per hour (periods up to {MAX_HOURLY_DAYS} days) or per day."
        ),
    }
    columns = [
        Column("bucket", "Period start", width=1.5),
        Column("task", "Task", width=2.4),
        Column("queue", "Queue", width=0.8),
        Column("jobs", "Jobs", width=0.7),
        Column("succeeded", "Succeeded", width=0.8),
        Column("failed", "Failed", width=0.7),
        Column("cancelled", "Cancelled", width=0.8),
        Column("unfinished", "Unfinished", width=0.8),
        Column("error_rate", "Error rate %", width=0.9),
        Column("runtime_p50", "Runtime p50 (s)", width=1.1),
        Column("runtime_p95", "Runtime p95 (s)", width=1.1),
        Column("wait_p50", "Wait p50 (s)", width=1),
        Column("wait_p95", "Wait p95 (s)", width=1),
    ]
    charts = [Chart(title="Jobs per period, by outcome", x="bucket", series=["succeeded", "failed"])]

    def validate(self, params: dict[str, Any]) -> None:
        days = params["period"].days
        if params["bucket"] == "hour" and days > MAX_HOURLY_DAYS:
            raise InvalidParams(
                {
                    "params.period": (
                        f"hourly rows cover at most {MAX_HOURLY_DAYS} days, this period has {days}; use bucket day"
                    )
                }
            )

    def count(self, params, rows) -> None:
        # One row per group: counting them would run the whole query twice.
        return None

    def rows(self, params: dict[str, Any]) -> Iterator[tuple]:
        jobs = filtered_jobs(params).annotate(bucket=Trunc("created_at", params["bucket"]))
        groups = (
            jobs.values(*GROUP_BY)
            .annotate(
                jobs=Count("pk"),
                succeeded=Count("pk", filter=Q(status=JobStatus.SUCCESS)),
                failed=Count("pk", filter=Q(status__in=FAILED_STATUSES)),
                cancelled=Count("pk", filter=Q(status=JobStatus.REVOKED)),
                unfinished=Count("pk", filter=Q(status__in=ACTIVE_STATUSES)),
            )
            .order_by(*GROUP_BY)
        )
        durations = {
            "runtime": SecondsBetween("started_at", "finished_at"),
            "wait": SecondsBetween("queued_at", "started_at"),
        }
        computed: dict[str, dict] = {}
        if percentiles_in_sql():
            groups = groups.annotate(
                **{
                    f"{name}_p{round(fraction * 100)}": PercentileCont(expression, fraction)
                    for name, expression in durations.items()
                    for fraction in FRACTIONS
                }
            )
        else:
            computed = {
                name: grouped_percentiles(jobs, group_by=GROUP_BY, value=expression, fractions=FRACTIONS)
                for name, expression in durations.items()
            }
        for group in groups.iterator(chunk_size=settings.REPORTS_CHUNK_SIZE):
            if computed:
                key = tuple(group[field] for field in GROUP_BY)
                for name, by_group in computed.items():
                    for fraction, value in zip(FRACTIONS, by_group.get(key, (None, None)), strict=True):
                        group[f"{name}_p{round(fraction * 100)}"] = value
            finished = group["succeeded"] + group["failed"]
            yield (
                group["bucket"],
                group["task_name"],
                group["queue"],
                group["jobs"],
                group["succeeded"],
                group["failed"],
                group["cancelled"],
                group["unfinished"],
                round(100 * group["failed"] / finished, 2) if finished else None,
                _rounded(group["runtime_p50"]),
                _rounded(group["runtime_p95"]),
                _rounded(group["wait_p50"]),
                _rounded(group["wait_p95"]),
            )
