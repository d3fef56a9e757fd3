"""The operations dashboard in the admin: throughput, queue length,
completion time, error rate and workers, for the last hour, on one page.

Charts come from the Job table (ops/stats.py), so they show the past hour
even right after a restart and agree across web processes; the broker and
the workers are asked for what only they know (ready messages, consumers,
resource use), through a short cache.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.utils import timezone

from jobs.models import JobStatus
from jobs.queues import Queue
from ops import broker, stats
from ops.charts import Series, bar_chart, line_chart

WINDOW_MINUTES = 60
# Who may open it: it shows task names, volumes and worker hosts, what the
# job list shows to whoever may view jobs.
PERMISSION = "jobs.view_job"


@dataclass
class QueueRow:
    name: str
    ready: int | None  # on the broker; None when the broker did not answer
    consumers: int | None
    running: int
    finished: int
    failed: int
    wait_avg: float | None
    runtime_avg: float | None


def queue_rows(depths, active, finished_groups) -> list[QueueRow]:
    rows = []
    for queue in Queue:
        groups = [group for group in finished_groups if group.queue == queue.value]
        waits = sum(group.wait.count for group in groups)
        runs = sum(group.runtime.count for group in groups)
        depth = (depths or {}).get(queue.value)
        rows.append(
            QueueRow(
                name=queue.value,
                ready=depth.messages if depth else None,
                consumers=depth.consumers if depth else None,
                running=sum(
                    n for (q, _, status), n in active.items() if q == queue.value and status == JobStatus.STARTED
                ),
                finished=sum(group.count for group in groups),
                failed=sum(group.count for group in groups if group.status in stats.FAILED_STATUSES),
                wait_avg=sum(group.wait.total for group in groups) / waits if waits else None,
                runtime_avg=sum(group.runtime.total for group in groups) / runs if runs else None,
            )
        )
    return rows


def dashboard_context() -> dict:
    now = timezone.now()
    queues = [queue.value for queue in Queue]
    series = stats.minute_series(now, WINDOW_MINUTES, queues)
    labels = [timezone.localtime(minute).strftime("%H:%M") for minute in series.minutes]
    hour_ago = now - timedelta(minutes=WINDOW_MINUTES)
    finished_groups = stats.finished_since(hour_ago, recent_since=hour_ago)
    active = stats.active_counts()
    depths = broker.queue_depths()
    consumers_counted = broker.counts_consumers()
    workers = broker.workers_stats()
    rows = queue_rows(depths, active, finished_groups)

    finished = sum(row.finished for row in rows)
    failed = sum(row.failed for row in rows)
    completions = [value for value in series.completion_avg if value is not None]
    charts = [
        (
            "Throughput (jobs finished per minute)",
            line_chart(
                name="throughput",
                labels=labels,
                series=[Series("finished", series.finished), Series("failed", series.failed, "#d55e00")],
            ),
        ),
        (
            "Queue length (jobs waiting for a worker)",
            line_chart(
                name="queue-length",
                labels=labels,
                series=[Series(queue, series.waiting[queue]) for queue in queues],
            ),
        ),
        (
            "Completion time (average per minute)",
            line_chart(
                name="completion-time",
                labels=labels,
                unit=" s",
                series=[
                    Series("request to end", series.completion_avg),
                    Series("running", series.runtime_avg, "#009e73"),
                ],
            ),
        ),
        (
            "Error rate (failed, dead or lost, per minute)",
            line_chart(
                name="error-rate",
                labels=labels,
                unit="%",
                series=[Series("errors", [None if r is None else 100 * r for r in series.error_ratio], "#d55e00")],
            ),
        ),
        (
            "Workers: CPU (main process, average since start)",
            bar_chart(
                name="worker-cpu",
                unit="%",
                bars=[(worker.name, worker.cpu_percent) for worker in workers],
            ),
        ),
        (
            "Workers: peak memory (main process)",
            bar_chart(
                name="worker-memory",
                unit=" MiB",
                colour="#009e73",
                bars=[(worker.name, worker.max_rss_mib) for worker in workers],
            ),
        ),
    ]
    return {
        "window_minutes": WINDOW_MINUTES,
        "generated_at": now,
        "charts": charts,
        "queues": rows,
        "workers": workers,
        "broker_up": depths is not None,
        "consumers_counted": consumers_counted,
        "tiles": [
            ("Workers online", len(workers)),
            ("Ready on the broker", "?" if depths is None else sum(d.messages for d in depths.values())),
            ("Running", sum(row.running for row in rows)),
            (f"Finished, last {WINDOW_MINUTES} min", finished),
            ("Error rate", f"{100 * failed / finished:.1f} %" if finished else "-"),
            ("Avg completion", f"{sum(completions) / len(completions):.2f} s" if completions else "-"),
        ],
    }


def dashboard_view(site):
    """The view, bound to an admin site (its header, sidebar and login)."""

    def view(request):
        if not request.user.has_perm(PERMISSION):
            raise PermissionDenied
        context = {
            **site.each_context(request),
            "title": "Operations dashboard",
            **dashboard_context(),
        }
        return TemplateResponse(request, "admin/ops/dashboard.html", context)

    return view
