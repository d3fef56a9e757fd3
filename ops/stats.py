"""Aggregates of the Job table, for the metrics endpoint and the dashboard.

Every query is an aggregate that the database computes; none loads job rows
into Python. Queries over finished jobs are bounded by `created_at`
(indexed, alone and with `status`), so their cost follows recent traffic and
not the size of a table that keeps JOBS_RETENTION_DAYS of history. The price
of that bound: a job that finishes more than OPS_METRICS_LOOKBACK_HOURS after
it was created (a far ETA, a day-long backlog) is left out of the finished
figures. The same expressions run on PostgreSQL and on the embedded SQLite.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Case, Count, DurationField, ExpressionWrapper, F, Min, Q, Sum, When
from django.db.models.functions import Coalesce, Greatest, TruncMinute

from jobs.models import ACTIVE_STATUSES, FINISHED_STATUSES, Job, JobStatus

# Errors, for error rates. A cancelled job (REVOKED) is someone's decision,
# not a failure.
FAILED_STATUSES = (JobStatus.FAILURE, JobStatus.DEAD, JobStatus.LOST)

# Upper bounds (seconds) of the histogram buckets. Runtime spans a no-op job
# to a report near its 1700 s hard limit; wait time is ideally milliseconds
# and alarming past minutes.
RUNTIME_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800)

_RUNTIME = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
_WAIT = ExpressionWrapper(F("started_at") - F("queued_at"), output_field=DurationField())
_COMPLETION = ExpressionWrapper(F("finished_at") - F("created_at"), output_field=DurationField())
# Runtime and wait exist only for jobs that started; wait also needs the
# broker's confirmation time (a job a worker took before QUEUED was written
# gets it from the worker, see jobs.tracking).
_HAS_RUNTIME = Q(started_at__isnull=False)
_HAS_WAIT = Q(started_at__isnull=False, queued_at__isnull=False)


def lookback() -> timedelta:
    return timedelta(hours=settings.OPS_METRICS_LOOKBACK_HOURS)


def _seconds(value: timedelta | None) -> float:
    return value.total_seconds() if value is not None else 0.0


def active_counts() -> dict[tuple[str, str, str], int]:
    """{(queue, task, status): jobs} for jobs that have not finished.

    The (status, created_at) index finds them; there are as many as the
    current backlog, however long the table's history is.
    """
    rows = (
        Job.objects.filter(status__in=ACTIVE_STATUSES)
        .order_by()
        .values_list("queue", "task_name", "status")
        .annotate(jobs=Count("pk"))
    )
    return {(queue, task, status): jobs for queue, task, status, jobs in rows}


@dataclass
class Histogram:
    """Cumulative bucket counts, as Prometheus wants them (le=bound)."""

    bounds: tuple[float, ...]
    buckets: list[int] = field(default_factory=list)
    count: int = 0
    total: float = 0.0


@dataclass
class FinishedGroup:
    """The jobs of one queue, task and final status that finished since some
    moment, with their runtime and wait-time histograms."""

    queue: str
    task: str
    status: str
    count: int
    recent: int  # of which finished within the "recent" window
    runtime: Histogram
    wait: Histogram


def _histogram_aggregates(prefix: str, expression, present: Q, bounds) -> dict:
    # Each bucket is one conditional count over the duration annotation;
    # Django writes the interval comparison for PostgreSQL and SQLite alike.
    aggregates = {
        f"{prefix}_{index}": Count("pk", filter=present & Q(**{f"{prefix}__lte": timedelta(seconds=bound)}))
        for index, bound in enumerate(bounds)
    }
    aggregates[f"{prefix}_count"] = Count("pk", filter=present)
    aggregates[f"{prefix}_sum"] = Sum(expression, filter=present)
    return aggregates


def _histogram(row: dict, prefix: str, bounds) -> Histogram:
    return Histogram(
        bounds=bounds,
        buckets=[row[f"{prefix}_{index}"] for index in range(len(bounds))],
        count=row[f"{prefix}_count"],
        total=_seconds(row[f"{prefix}_sum"]),
    )


def finished_since(since: datetime, *, recent_since: datetime) -> list[FinishedGroup]:
    """Jobs that finished at or after `since`, grouped by queue, task and
    status: one query, whatever the number of groups."""
    start = min(since, recent_since)
    rows = (
        Job.objects.filter(
            status__in=FINISHED_STATUSES,
            created_at__gte=start - lookback(),
            finished_at__gte=start,
        )
        .annotate(runtime=_RUNTIME, wait=_WAIT)
        .order_by()
        .values("queue", "task_name", "status")
        .annotate(
            count=Count("pk", filter=Q(finished_at__gte=since)),
            recent=Count("pk", filter=Q(finished_at__gte=recent_since)),
            **_histogram_aggregates("runtime", _RUNTIME, _HAS_RUNTIME & Q(finished_at__gte=since), RUNTIME_BUCKETS),
            **_histogram_aggregates("wait", _WAIT, _HAS_WAIT & Q(finished_at__gte=since), WAIT_BUCKETS),
        )
    )
    return [
        FinishedGroup(
            queue=row["queue"],
            task=row["task_name"],
            status=row["status"],
            count=row["count"],
            recent=row["recent"],
            runtime=_histogram(row, "runtime", RUNTIME_BUCKETS),
            wait=_histogram(row, "wait", WAIT_BUCKETS),
        )
        for row in rows
    ]


@dataclass
class MinuteSeries:
    """Per-minute figures over a window, oldest first, for the dashboard."""

    minutes: list[datetime]
    finished: list[int]
    failed: list[int]
    completion_avg: list[float | None]  # seconds from request to end
    runtime_avg: list[float | None]  # seconds from start to end
    waiting: dict[str, list[int]]  # queue -> jobs waiting for a worker, at each minute's end

    @property
    def error_ratio(self) -> list[float | None]:
        return [
            failed / finished if finished else None for finished, failed in zip(self.finished, self.failed, strict=True)
        ]


def minute_series(end: datetime, minutes: int, queues: list[str]) -> MinuteSeries:
    """The last `minutes` whole minutes before `end` (its minute included)."""
    last = end.replace(second=0, microsecond=0)
    starts = [last - timedelta(minutes=minutes - 1 - index) for index in range(minutes)]
    window_start = starts[0]
    position = {minute: index for index, minute in enumerate(starts)}

    finished = [0] * minutes
    failed = [0] * minutes
    completion = [None] * minutes
    runtime = [None] * minutes
    completion_sum = [0.0] * minutes
    runtime_sum = [0.0] * minutes
    runtime_count = [0] * minutes
    rows = (
        Job.objects.filter(
            status__in=FINISHED_STATUSES,
            created_at__gte=window_start - lookback(),
            finished_at__gte=window_start,
        )
        .annotate(minute=TruncMinute("finished_at"))
        .order_by()
        .values("minute")
        .annotate(
            jobs=Count("pk"),
            failures=Count("pk", filter=Q(status__in=FAILED_STATUSES)),
            completion=Sum(_COMPLETION),
            runtime=Sum(_RUNTIME, filter=_HAS_RUNTIME),
            started=Count("pk", filter=_HAS_RUNTIME),
        )
    )
    for row in rows:
        index = position.get(row["minute"])
        if index is None:  # finished after `end`, in a minute not shown yet
            continue
        finished[index] = row["jobs"]
        failed[index] = row["failures"]
        completion_sum[index] = _seconds(row["completion"])
        runtime_sum[index] = _seconds(row["runtime"])
        runtime_count[index] = row["started"]
    for index in range(minutes):
        if finished[index]:
            completion[index] = completion_sum[index] / finished[index]
        if runtime_count[index]:
            runtime[index] = runtime_sum[index] / runtime_count[index]
    return MinuteSeries(
        minutes=starts,
        finished=finished,
        failed=failed,
        completion_avg=completion,
        runtime_avg=runtime,
        waiting=_waiting_series(starts, queues),
    )


def _waiting_series(starts: list[datetime], queues: list[str]) -> dict[str, list[int]]:
    """Jobs on the broker, not yet taken by a worker, at the end of each
    minute: queued by then, and neither started nor finished (cancelled)
    by then. One query with a conditional count per minute."""
    ends = [start + timedelta(minutes=1) for start in starts]

    def waiting_at(moment):
        return (
            Q(queued_at__lte=moment)
            & (Q(started_at__isnull=True) | Q(started_at__gt=moment))
            & (Q(finished_at__isnull=True) | Q(finished_at__gt=moment))
        )

    rows = (
        Job.objects.filter(queued_at__isnull=False, queued_at__lt=ends[-1], created_at__gte=starts[0] - lookback())
        .filter(Q(started_at__isnull=True) | Q(started_at__gte=starts[0]))
        .filter(Q(finished_at__isnull=True) | Q(finished_at__gte=starts[0]))
        .order_by()
        .values("queue")
        .annotate(**{f"m{index}": Count("pk", filter=waiting_at(end)) for index, end in enumerate(ends)})
    )
    series = {queue: [0] * len(ends) for queue in queues}
    for row in rows:
        series[row["queue"]] = [row[f"m{index}"] for index in range(len(ends))]
    return series


# The two states in which a job waits on something other than a worker's
# CPU: PENDING on the outbox relay (beat) to publish it, QUEUED on a worker to
# take it. Their oldest age per queue is what shows a stuck relay or no
# consumer, long before the backlog's size does.
WAITING_STATUSES = (JobStatus.PENDING, JobStatus.QUEUED)


def oldest_waiting(now: datetime) -> dict[tuple[str, str], float]:
    """{(queue, status): seconds} the oldest PENDING and QUEUED job of each
    queue has been waiting, one aggregate query over the backlog (the
    (status, created_at) index finds it).

    A job waits from the moment it could have moved on: PENDING from its
    creation, QUEUED from the broker's confirmation, either of them no earlier
    than its ETA. A job parked with a countdown is not late, so its age stays
    0 until it is due.
    """
    waiting_since = Case(
        When(status=JobStatus.QUEUED, then=Coalesce("queued_at", "created_at")),
        default=F("created_at"),
    )
    due_since = Greatest(waiting_since, Coalesce("eta", waiting_since))
    rows = (
        Job.objects.filter(status__in=WAITING_STATUSES)
        .order_by()
        .values_list("queue", "status")
        .annotate(oldest=Min(due_since))
    )
    return {(queue, status): max(0.0, (now - oldest).total_seconds()) for queue, status, oldest in rows}


def finished_by_queue(since: datetime) -> dict[tuple[str, str], int]:
    """{(queue, status): jobs} finished at or after `since`, one aggregate
    query bounded by the created_at index like finished_since."""
    rows = (
        Job.objects.filter(status__in=FINISHED_STATUSES, created_at__gte=since - lookback(), finished_at__gte=since)
        .order_by()
        .values_list("queue", "status")
        .annotate(jobs=Count("pk"))
    )
    return {(queue, status): jobs for queue, status, jobs in rows}
