"""The job activity report: counts, outcomes, error rate, and p50/p95 of
runtime and wait, per task, queue and hour or day."""

from datetime import datetime, timedelta

import pytest
from django.db.models.functions import Trunc

from jobs.models import Job, JobStatus
from reports.registry import get_report_type
from reports.sql import PercentileCont, SecondsBetween, grouped_percentiles, percentile_cont
from tests.reports.conftest import UTC, make_job

pytestmark = pytest.mark.django_db

DAY = datetime(2026, 3, 2, tzinfo=UTC)
COLUMNS = [column.key for column in get_report_type("jobs.activity").columns]


def activity(**params) -> list[dict]:
    report = get_report_type("jobs.activity")
    cleaned = report.clean({"period": {"from": "2026-03-01", "to": "2026-03-03"}, **params})
    return [dict(zip(COLUMNS, row, strict=True)) for row in report.stream(report.rows(cleaned))]


def test_it_counts_outcomes_per_task_queue_and_hour():
    nine, ten = DAY + timedelta(hours=9), DAY + timedelta(hours=10)
    for status in (
        JobStatus.SUCCESS,
        JobStatus.SUCCESS,
        JobStatus.SUCCESS,
        JobStatus.FAILURE,
        JobStatus.DEAD,
        JobStatus.REVOKED,
        JobStatus.QUEUED,
    ):
        make_job("shop.invoice_render", created=nine + timedelta(minutes=5), status=status)
    make_job("shop.invoice_render", created=ten, status=JobStatus.SUCCESS)
    make_job("mail.send", queue="email", created=nine, status=JobStatus.LOST)

    rows = activity(bucket="hour")

    assert [(row["bucket"], row["task"], row["queue"]) for row in rows] == [
        (nine, "mail.send", "email"),
        (nine, "shop.invoice_render", "default"),
        (ten, "shop.invoice_render", "default"),
    ]
    invoices = rows[1]
    assert (
        invoices["jobs"],
        invoices["succeeded"],
        invoices["failed"],
        invoices["cancelled"],
        invoices["unfinished"],
    ) == (7, 3, 2, 1, 1)
    assert invoices["error_rate"] == 40.0  # 2 failed of the 5 that finished
    assert rows[0]["error_rate"] == 100.0
    assert rows[2]["error_rate"] == 0.0


def test_day_rows_follow_the_project_time_zone(settings):
    settings.TIME_ZONE = "America/New_York"
    # 03:00 UTC on 3 March is still 2 March in New York.
    make_job(created=datetime(2026, 3, 3, 3, 0, tzinfo=UTC))

    (row,) = activity(bucket="day")

    assert row["bucket"].date().isoformat() == "2026-03-02"
    assert row["bucket"].utcoffset() == timedelta(hours=-5)


def test_runtime_and_wait_percentiles_are_postgresql_percentile_cont():
    for seconds in range(1, 11):
        make_job(created=DAY + timedelta(hours=9), runtime=seconds, wait=seconds / 10)

    (row,) = activity()

    # 1..10: p50 = 5.5; p95 lies 0.55 of the way from 9 to 10.
    assert (row["runtime_p50"], row["runtime_p95"]) == (5.5, 9.55)
    assert (row["wait_p50"], row["wait_p95"]) == (0.55, 0.955)


def test_jobs_that_never_started_have_no_runtime():
    make_job(created=DAY, status=JobStatus.QUEUED, wait=None, runtime=None)

    (row,) = activity()

    assert (row["runtime_p50"], row["wait_p95"], row["error_rate"]) == (None, None, None)


def test_the_sqlite_fallback_gives_what_percentile_cont_gives():
    for index, seconds in enumerate([0.2, 7.0, 3.3, 3.3, 12.5, 0.9, 4.4]):
        make_job("a" if index % 2 else "b", created=DAY + timedelta(hours=index % 3), runtime=seconds)
    jobs = Job.objects.annotate(bucket=Trunc("created_at", "hour"))
    runtime = SecondsBetween("started_at", "finished_at")
    in_sql = {
        (row["bucket"], row["task_name"]): [row["p50"], row["p95"]]
        for row in jobs.values("bucket", "task_name").annotate(
            p50=PercentileCont(runtime, 0.5), p95=PercentileCont(runtime, 0.95)
        )
    }

    in_python = grouped_percentiles(jobs, group_by=("bucket", "task_name"), value=runtime, fractions=(0.5, 0.95))

    assert in_python.keys() == in_sql.keys()
    for key, values in in_sql.items():
        assert in_python[key] == pytest.approx(values, abs=1e-9)


def test_the_report_gives_the_same_rows_with_the_fallback(monkeypatch):
    for index, seconds in enumerate([0.2, 7.0, 3.3, 12.5, 0.9]):
        make_job("a" if index % 2 else "b", created=DAY + timedelta(hours=index % 2), runtime=seconds, wait=seconds / 3)
    with_sql = activity(bucket="hour")

    monkeypatch.setattr("reports.report_types.activity.percentiles_in_sql", lambda: False)

    assert activity(bucket="hour") == with_sql


def test_percentile_cont_interpolates_between_neighbours():
    assert percentile_cont([], 0.5) is None
    assert percentile_cont([4.0], 0.95) == 4.0
    assert percentile_cont([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile_cont([10.0, 20.0], 0.95) == pytest.approx(19.5)
